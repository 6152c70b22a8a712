"""The canonical DCGAN training step, to time a trainer against in the same run.

Networks and step as in the DCGAN paper (Radford et al. 2015, arXiv 1511.06434) and the PyTorch
example (github.com/pytorch/examples, dcgan/main.py): 64x64x3 images, nz=100, ngf=ndf=64,
BatchNorm, ReLU in G and LeakyReLU(0.2) in D, Tanh out of G and Sigmoid out of D, BCELoss,
Adam(lr=2e-4, betas=(0.5, 0.999)), weights drawn from N(0, 0.02), fp32, eager. The real batch is
synthetic and already on the device, so this times the training step alone: one D update and one
G update, as one iteration of the example's loop.

Two faster versions of the same step show what the hardware allows (CUDA only for the graph):
`bf16_channels_last` runs it under bfloat16 autocast with channels_last tensors (D gives logits,
the loss is BCEWithLogitsLoss), and `bf16_cuda_graph` captures that step once as a CUDA graph and
replays it.

    python bench/canonical_dcgan.py                     # CUDA: batch 64..2048, all variants; CPU: 64, canonical
    python bench/canonical_dcgan.py --batch 64 --variant canonical --iters 5

Prints one JSON line naming the device, then one per (variant, batch): ms per step, images/s and
TFLOP/s at about 2.48 GFLOP per image per step (torch.utils.flop_counter). bench/dcgan_speed.py
imports `make_step` and `time_step` to time the canonical step beside gantry's loop.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import nn

NZ, NGF, NDF, NC = 100, 64, 64, 3  # latent size, G's and D's base widths, image channels
VARIANTS = ("canonical", "bf16_channels_last", "bf16_cuda_graph")
FLOP_PER_IMAGE = 2.482e9  # forward and backward of one D and one G update, per image


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            # z: NZ x 1 x 1
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(NGF * 8),
            nn.ReLU(True),
            # (ngf*8) x 4 x 4
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF * 4),
            nn.ReLU(True),
            # (ngf*4) x 8 x 8
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF * 2),
            nn.ReLU(True),
            # (ngf*2) x 16 x 16
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF),
            nn.ReLU(True),
            # ngf x 32 x 32
            nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
            nn.Tanh(),
            # nc x 64 x 64
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    """D(x) as a probability (`sigmoid=True`, the canonical step) or as a logit (for autocast)."""

    def __init__(self, sigmoid: bool = True) -> None:
        super().__init__()
        self.main = nn.Sequential(
            # x: nc x 64 x 64
            nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
            # ndf x 32 x 32
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 2),
            nn.LeakyReLU(0.2, True),
            # (ndf*2) x 16 x 16
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 4),
            nn.LeakyReLU(0.2, True),
            # (ndf*4) x 8 x 8
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 8),
            nn.LeakyReLU(0.2, True),
            # (ndf*8) x 4 x 4
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False),
            # 1 x 1 x 1
            *([nn.Sigmoid()] if sigmoid else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)  # batch


def weights_init(m: nn.Module) -> None:
    """The DCGAN paper's initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), bias 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def make_step(variant: str, batch: int, device: torch.device) -> Callable[[], None]:
    """A function that runs one D update and one G update on a fixed real batch of `batch` images."""
    canonical = variant == "canonical"
    G, D = Generator().to(device), Discriminator(sigmoid=canonical).to(device)
    G.apply(weights_init)
    D.apply(weights_init)
    if not canonical:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    criterion = nn.BCELoss() if canonical else nn.BCEWithLogitsLoss()
    capturable = variant == "bf16_cuda_graph"  # Adam's step counter stays on the GPU
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), capturable=capturable)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), capturable=capturable)
    real = torch.rand(batch, NC, 64, 64, device=device) * 2 - 1
    real_label, fake_label = torch.ones(batch, device=device), torch.zeros(batch, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=not canonical)

    def step() -> None:
        # (1) D: maximise log D(x) + log(1 - D(G(z)))
        D.zero_grad(set_to_none=canonical)  # a CUDA graph keeps its gradient tensors
        with autocast:
            err_real = criterion(D(real).float(), real_label)
        err_real.backward()
        noise = torch.randn(batch, NZ, 1, 1, device=device)
        with autocast:
            fake = G(noise)
            err_fake = criterion(D(fake.detach()).float(), fake_label)
        err_fake.backward()
        opt_D.step()
        # (2) G: maximise log D(G(z)), the non-saturating loss, on the same G(z)
        G.zero_grad(set_to_none=canonical)
        with autocast:
            err_G = criterion(D(fake).float(), real_label)
        err_G.backward()
        opt_G.step()

    if variant != "bf16_cuda_graph":
        return step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(5):  # warm up before capture: cuDNN's algorithms, Adam's state
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def time_step(step: Callable[[], None], device: torch.device, iters: int, warmup: int) -> float:
    """Seconds per step: the median of three timed blocks of `iters` steps, after `warmup` steps."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / iters)
    return sorted(times)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, action="append", help="repeatable (default 64; on CUDA 64..2048)")
    ap.add_argument(
        "--variant", choices=VARIANTS, action="append", help="repeatable (default all; CPU: canonical)"
    )
    ap.add_argument("--iters", type=int, default=None, help="steps per timed block (default 3; CUDA 50)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    batches = args.batch or ([64, 128, 512, 2048] if gpu else [64])
    variants = args.variant or (list(VARIANTS) if gpu else ["canonical"])  # CPU bf16 is often emulated
    if not gpu and "bf16_cuda_graph" in variants:
        ap.error("bf16_cuda_graph needs CUDA")
    iters = args.iters or (50 if gpu else 3)
    name = torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads"
    print(json.dumps({"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}))
    for variant in variants:
        for batch in batches:
            torch.manual_seed(0)
            t = time_step(make_step(variant, batch, device), device, iters, warmup=10 if gpu else 1)
            row = {
                "variant": variant,
                "batch": batch,
                "ms_per_step": round(t * 1e3, 3),
                "images_per_s": round(batch / t),
                "tflops": round(FLOP_PER_IMAGE * batch / t / 1e12, 1),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
