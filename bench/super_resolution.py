"""SRResNet and SRGAN at 4x on the validation photos, in the layout of the SRGAN paper's Table 2.

    .venv/bin/python bench/super_resolution.py                     # the CPU schedule of RESULTS.md
    .venv/bin/python bench/super_resolution.py --blocks 16 --channels 64 --crop 96 --steps 1000000 \
        --lr 1e-4 --lr-decay none --no-augment --no-bicubic-skip --ndf 64 --gan-steps 100000  # the paper's

Trains SRResNet (MSE) on the `photos` train split, then SRGAN initialised from it, through the shared
training loop; measures PSNR/SSIM on Y (4-pixel border cropped) for bicubic, SRResNet and SRGAN on
the 4 validation photos; prints them next to the paper's Set5 row (Ledig et al. 2016, Table 2), and
writes a side-by-side crop (bicubic | SRResNet | SRGAN | HR) to bench/super_resolution_crops.png.
Trains on --threads CPU threads, or on a GPU with `--device cuda`; the scores are computed on the CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import load_dataset
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.metrics.sr import sr_scores
from gantry.worker.sr.ops import bicubic_resize, mod_crop
from gantry.worker.sr.upscale import load_upscaler, super_resolve

# Ledig et al. 2016, Table 2, Set5 at 4x: (PSNR dB, SSIM).
PAPER_SET5 = {"bicubic": (28.43, 0.8211), "SRResNet": (32.05, 0.9019), "SRGAN": (29.40, 0.8472)}


def run(
    model: str, steps: int, args: argparse.Namespace, *, lr: float, init: bytes | None = None, name: str = ""
) -> bytes:
    options = {
        "blocks": args.blocks,
        "channels": args.channels,
        "scale": 4,
        "bicubic_skip": args.bicubic_skip,
        "augment": args.augment,
        "lr_decay": args.lr_decay if model == "srresnet" else "none",
    }
    options |= {"lr": lr}
    if model == "srgan":
        options |= {"ndf": args.ndf, "adversarial_weight": args.adversarial_weight}
    fields = {"image_size": args.crop, "batch_size": args.batch, "steps": steps, "seed": args.seed}
    spec = parse_train_spec(model, fields | {"checkpoint_every": steps, "sample_every": steps}, options)
    data = load_dataset("photos", image_size=args.crop, full_size=True)
    last: dict[str, bytes] = {}
    started = time.perf_counter()

    def progress(step: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"  {model} step {step}/{steps} ({time.perf_counter() - started:.0f} s): {shown}", flush=True)

    callbacks = Callbacks(
        progress=progress,
        should_stop=lambda: False,
        checkpoint=lambda step, data: last.__setitem__("checkpoint", data),
        samples=lambda step, png: None,
    )
    train(spec, data, callbacks=callbacks, init=init, device=args.device, log_every=args.log_every)
    print(f"  {model}: {steps} steps in {time.perf_counter() - started:.0f} s", flush=True)
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        (args.save_dir / f"{name or model}.pt").write_bytes(last["checkpoint"])
    return last["checkpoint"]


def crops_png(
    hr: np.ndarray, generators: list[torch.nn.Module], path: Path, *, box: tuple[int, int, int]
) -> None:
    """bicubic | SRResNet | SRGAN | HR of one HR region (top, left, side), each enlarged 2x (nearest)."""
    hr = mod_crop(hr, 4)
    h, w = hr.shape[:2]
    lr = bicubic_resize(hr, h // 4, w // 4)
    top, left, side = box
    panels = [bicubic_resize(lr, h, w)] + [super_resolve(G, lr) for G in generators] + [hr]
    labels = ["bicubic", "SRResNet", "SRGAN", "HR"]
    zoom, pad, caption = 2, 4, 14
    canvas = Image.new(
        "RGB", (len(panels) * (side * zoom + pad) + pad, side * zoom + 2 * pad + caption), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for i, (panel, label) in enumerate(zip(panels, labels, strict=True)):
        crop = Image.fromarray(panel[top : top + side, left : left + side]).resize(
            (side * zoom,) * 2, Image.NEAREST
        )
        x = pad + i * (side * zoom + pad)
        canvas.paste(crop, (x, pad + caption))
        draw.text((x, 2), label, fill="black")
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=16, help="the paper: 16")
    parser.add_argument("--channels", type=int, default=32, help="the paper: 64")
    parser.add_argument("--ndf", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64, help="HR crop side (the paper: 96)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3, help="SRResNet's Adam lr (the paper: 1e-4)")
    parser.add_argument("--gan-lr", type=float, default=1e-4, help="SRGAN's Adam lr (the paper: 1e-4)")
    parser.add_argument(
        "--finetune-steps", type=int, default=0, help="SRResNet steps at --finetune-lr after --steps"
    )
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument(
        "--bicubic-skip", action=argparse.BooleanOptionalAction, default=True, help="VDSR's global residual"
    )
    parser.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=True, help="flips and 90-degree rotations"
    )
    parser.add_argument(
        "--lr-decay", choices=("none", "linear"), default="linear", help="SRResNet's lr schedule"
    )
    parser.add_argument("--adversarial-weight", type=float, default=1e-3, help="SRGAN's (the paper: 1e-3)")
    parser.add_argument("--save-dir", type=Path, help="write srresnet.pt and srgan.pt here")
    parser.add_argument(
        "--srresnet", type=Path, help="an SRResNet checkpoint to start from instead of training one"
    )
    parser.add_argument("--steps", type=int, default=6000, help="SRResNet steps")
    parser.add_argument("--gan-steps", type=int, default=1000, help="SRGAN steps after SRResNet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where to train: cpu or cuda")
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--png", type=Path, default=Path(__file__).with_name("super_resolution_crops.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    srresnet = args.srresnet.read_bytes() if args.srresnet else run("srresnet", args.steps, args, lr=args.lr)
    if args.finetune_steps:  # a second stage at a lower lr, G carried over (as the paper's SRGAN: 1e-4, 1e-5)
        srresnet = run(
            "srresnet", args.finetune_steps, args, lr=args.finetune_lr, init=srresnet, name="srresnet-ft"
        )
    srgan = run("srgan", args.gan_steps, args, lr=args.gan_lr, init=srresnet)
    device = torch.device("cpu")
    G_res, G_gan = (load_upscaler(c, device=device).G for c in (srresnet, srgan))
    validation = list(load_dataset("photos", image_size=args.crop, split="test", full_size=True).images)
    res, gan = sr_scores(G_res, validation, scale=4), sr_scores(G_gan, validation, scale=4)
    rows = {
        "bicubic": (np.mean(res["psnr_bicubic"]), np.mean(res["ssim_bicubic"])),
        "SRResNet": (np.mean(res["psnr"]), np.mean(res["ssim"])),
        "SRGAN": (np.mean(gan["psnr"]), np.mean(gan["ssim"])),
    }
    print(
        f"\n4x on the 4 validation photos (astronaut, camera, chelsea, coffee); Y channel, 4-pixel border cropped\n"
        f"G: {args.blocks} blocks x {args.channels} channels, bicubic_skip {args.bicubic_skip}, "
        f"augment {args.augment}; HR crops {args.crop}, batch {args.batch}; "
        f"SRResNet {args.steps} steps at lr {args.lr} (decay {args.lr_decay})"
        f" + {args.finetune_steps} at {args.finetune_lr}, "
        f"SRGAN {args.gan_steps} steps at lr {args.gan_lr} (ndf {args.ndf}, "
        f"adversarial weight {args.adversarial_weight}); "
        f"{time.perf_counter() - started:.0f} s on "
        f"{'CUDA' if args.device == 'cuda' else f'{args.threads} CPU thread(s)'}\n"
    )
    print(
        f"| {'method':<9} | {'PSNR (dB)':>9} | {'SSIM':>6} | {'paper Set5 PSNR':>15} | {'paper Set5 SSIM':>15} |"
    )
    print(f"|{'-' * 11}|{'-' * 10}:|{'-' * 7}:|{'-' * 16}:|{'-' * 16}:|")
    for name, (p, s) in rows.items():
        pp, ps = PAPER_SET5[name]
        print(f"| {name:<9} | {p:>9.2f} | {s:>6.4f} | {pp:>15.2f} | {ps:>15.4f} |")
    print("\nper image (PSNR bicubic / SRResNet / SRGAN):")
    for i, name in enumerate(("astronaut", "camera", "chelsea", "coffee")):
        print(f"  {name:<10} {res['psnr_bicubic'][i]:6.2f} {res['psnr'][i]:6.2f} {gan['psnr'][i]:6.2f}")
    # chelsea's face and whiskers (HR 300 x 451): fine texture where SRGAN differs most from SRResNet.
    crops_png(validation[2], [G_res, G_gan], args.png, box=(60, 140, 96))
    print(f"\ncrops: {args.png}")


if __name__ == "__main__":
    main()
