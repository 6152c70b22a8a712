"""Sampling throughput: `gantry sample --count N` against the machine's PNG-encode ceiling for the
same images.

    python bench/sample_speed.py                          # 20,000 samples of a 64x64x3 DCGAN
    python bench/sample_speed.py --count 100000 --formats png,tar

A DCGAN at the paper's size (64x64x3, nz 100, ngf = ndf = 64) is trained for one step in embedded
mode (SQLite, file storage under a temporary folder; the weights do not change the speed), then a
sample job of `--count` images runs for each format, timed from its start to its end as the job
records them: G's batches, the PNG encoding, the object writes and the artifact records. Beside it,
for the same images from the same seed: G alone, and PNG encoding alone on one thread and on the
job's encoder threads (the ceiling a png or tar job can reach on this machine). It prints a table
for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--formats", default="png,npz,tar")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="gantry-sample-speed-"))
    for name in ("GANTRY_DATABASE_URL", "GANTRY_STORAGE_URL", "GANTRY_BROKER_URL", "GANTRY_API_URL"):
        os.environ.pop(name, None)
    os.environ["GANTRY_HOME"] = str(home)

    import torch

    from gantry.api.service import Service
    from gantry.jobs.keys import Manifest, manifest_key
    from gantry.jobs.settings import Settings
    from gantry.worker import sample as sample_phase
    from gantry.worker.gan.images import png_bytes
    from gantry.worker.gan.sampler import sample_batches

    svc = Service(Settings())
    train = svc.submit_train(
        "dcgan", dataset="photos", image_size=64, batch_size=8, steps=1, checkpoint_every=1
    )
    assert svc.run_embedded(train) == "succeeded", svc.get(train.id).error
    manifest = Manifest.parse(svc.objects.get_bytes(manifest_key(train.id)))
    checkpoint = svc.objects.get_bytes(manifest.key)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = max(1, min(8, os.cpu_count() or 1))
    print(
        f"device {device}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, encoder threads {threads}"
    )

    start = time.perf_counter()
    images = list(sample_batches(checkpoint, count=args.count, seed=0, device=device).batches)
    generate = args.count / (time.perf_counter() - start)
    flat = [image for batch in images for image in batch]
    start = time.perf_counter()
    for image in flat:
        png_bytes(image)
    encode_one = args.count / (time.perf_counter() - start)
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(png_bytes, flat))
        encode_pool = args.count / (time.perf_counter() - start)
    del images, flat

    rows = []
    for fmt in args.formats.split(","):
        job = svc.submit_sample(train.id, count=args.count, seed=0, format=fmt)
        assert svc.run_embedded(job) == "succeeded", svc.get(job.id).error
        done = svc.get(job.id)
        assert done.started_at is not None and done.finished_at is not None
        seconds = (done.finished_at - done.started_at).total_seconds()
        rows.append((fmt, args.count / seconds, seconds))
        print(f"sample --format {fmt}: {args.count / seconds:,.0f} images/s ({seconds:.1f} s)", flush=True)

    print()
    print(f"| {args.count:,} samples, 64x64x3, {device} | images/s | share of the encode ceiling |")
    print("|---|---|---|")
    print(f"| G alone | {generate:,.0f} | |")
    print(f"| PNG encoding alone, 1 thread | {encode_one:,.0f} | |")
    print(f"| PNG encoding alone, {threads} threads (the ceiling) | {encode_pool:,.0f} | 100% |")
    for fmt, rate, _ in rows:
        share = f"{rate / encode_pool:.0%}" if fmt != "npz" else "(no encoding)"
        print(f"| `gantry sample --format {fmt}` | {rate:,.0f} | {share} |")
    print(f"shard size {sample_phase.SHARD_IMAGES:,}; storage {svc.settings.storage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
