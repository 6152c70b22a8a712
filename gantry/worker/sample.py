"""The sample phase: samples, an interpolation, latent arithmetic, images for prompts, or
super-resolved inputs from a train job's checkpoint, written under `jobs/<id>/images/`.

Plain samples stream (`write_samples`): G makes them a batch at a time (the next one on a thread
of its own while this one is written), threads encode each batch's
PNGs (Pillow lets go of Python's lock while it compresses, so threads use every core, with no
process to fork from a worker's pool process and no pixels to pickle), more threads write them to
storage at once, and one transaction records each batch's artifacts. `--format npz` or `tar` writes
shards of SHARD_IMAGES images instead of a file each: arrays (no encoding at all) or PNGs in a tar.
"""

from __future__ import annotations

import io
import math
import os
import queue
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from gantry.jobs.keys import image_key
from gantry.jobs.specs import SampleSpec
from gantry.worker.errors import Stopped
from gantry.worker.gan.images import grid_png, png_bytes
from gantry.worker.gan.sampler import SampleResult
from gantry.worker.run import JobContext, device

SHARD_IMAGES = 10_000  # images per .npz or .tar shard
GRID_IMAGES = 256  # the grid shows the first 256 samples (one of 100,000 would be 20,000 pixels wide)
WRITE_THREADS = 8  # object writes at once: they wait on storage, not on a core


def sample_job(ctx: JobContext, spec: SampleSpec, parent_job_id: str) -> None:
    """Make what a sample job asks for: plain samples, an interpolation, latent arithmetic,
    images for prompts, or super-resolved inputs; written under `jobs/<id>/images/`."""
    checkpoint, _ = ctx.checkpoint_bytes(parent_job_id, spec.checkpoint)
    torch_device = device()
    if spec.input:
        from gantry.worker.sr.upscale import super_resolve_input

        result = super_resolve_input(checkpoint, spec.input, settings=ctx.settings, device=torch_device)
    elif spec.interpolate:
        from gantry.worker.gan.latent import interpolate

        a, b = (int(s) for s in spec.interpolate.split(":"))
        result = interpolate(
            checkpoint,
            seed_a=a,
            seed_b=b,
            frames=spec.frames,
            method=spec.interpolation,
            prompts=spec.prompts,
            device=torch_device,
            code_walk=spec.code_walk,
        )
    elif spec.arithmetic:
        from gantry.worker.gan.latent import arithmetic

        result = arithmetic(
            checkpoint,
            spec.arithmetic,
            count=spec.count,
            seed=spec.seed,
            prompts=spec.prompts,
            device=torch_device,
            code_walk=spec.code_walk,
        )
    elif spec.prompts:
        from gantry.worker.gan.text_sampler import sample_prompts

        result = sample_prompts(
            checkpoint, prompts=spec.prompts, count=spec.count, seed=spec.seed, device=torch_device
        )
    else:
        write_samples(ctx, spec, checkpoint)
        return
    write_result(ctx, result, count=spec.count)


def write_result(ctx: JobContext, result: SampleResult, *, count: int) -> None:
    """Write a sampler's result whole: its images one by one, its extra files, its grid."""
    names = result.names or [f"{i:06d}.png" for i in range(len(result.images))]
    for i, (name, png) in enumerate(zip(names, result.images, strict=True)):
        ctx.put(image_key(ctx.job_id, name), png, kind="image")
        if ctx.should_stop():
            raise Stopped
        if i % 16 == 0:
            ctx.heartbeat(step=i)
    for name, data in result.extra.items():
        ctx.put(image_key(ctx.job_id, name), data, kind="image" if name.endswith(".png") else "data")
    if result.grid is not None:
        ctx.put(image_key(ctx.job_id, "grid.png"), result.grid, kind="grid")
    # A 2-D model's samples are one points.npy, not one image each: all `count` were made.
    ctx.heartbeat(step=len(result.images) or count)


def write_samples(ctx: JobContext, spec: SampleSpec, checkpoint: bytes) -> None:
    """Plain samples, streamed a batch at a time in `spec.format` (see the module's docstring)."""
    from gantry.worker.gan.sampler import sample_batches

    made = sample_batches(checkpoint, count=spec.count, seed=spec.seed, device=device())
    if made.render is not None:  # not images (2-D points): the model's own files
        write_result(ctx, made.render, count=spec.count)
        return
    shard = _Shard(spec.format)
    grid: list[np.ndarray] = []
    done = 0
    encoders = max(1, min(8, os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(encoders, "gantry-png") as encode,
        ThreadPoolExecutor(WRITE_THREADS, "gantry-put") as put,
    ):
        for images in _ahead(made.batches):
            shown = sum(len(g) for g in grid)
            if shown < GRID_IMAGES:
                grid.append(images[: GRID_IMAGES - shown])
            pngs = list(encode.map(png_bytes, images)) if spec.format != "npz" else []
            if spec.format == "png":
                names = [image_key(ctx.job_id, f"{done + i:06d}.png") for i in range(len(images))]
                ctx.put_many([(key, png, "image") for key, png in zip(names, pngs, strict=True)], put)
            else:
                for i in range(len(images)):
                    shard.add(done + i, images[i], pngs[i] if pngs else None)
                    if shard.full:
                        _write_shard(ctx, shard, put)
            done += len(images)
            ctx.heartbeat(step=done)
            if ctx.should_stop():
                raise Stopped
        if shard.count:
            _write_shard(ctx, shard, put)
    kept = np.concatenate(grid)
    ctx.put(
        image_key(ctx.job_id, "grid.png"), grid_png(kept, nrow=math.ceil(math.sqrt(len(kept)))), kind="grid"
    )


def _ahead(batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """`batches`, with G making the next batch on a thread of its own while this one is encoded and
    written (torch lets go of Python's lock while it computes). Stops G, and waits for it, when the
    caller stops."""
    handoff: queue.Queue[tuple[np.ndarray | None, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: tuple[np.ndarray | None, BaseException | None]) -> bool:
        """Hand `item` over; False once the caller has stopped (so this thread never waits for good)."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for batch in batches:
                if not offer((batch, None)):
                    return
            offer((None, None))
        except BaseException as exc:  # handed to the caller, raised there
            offer((None, exc))

    thread = threading.Thread(target=make, name="gantry-generate", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = handoff.get()
            if error is not None:
                raise error
            if batch is None:
                return
            yield batch
    finally:
        stop.set()
        # G finishes the batch it is making and returns: a process that exits (a cancel by Ctrl-C)
        # with torch still running on another thread is aborted by the C++ runtime.
        thread.join()


def _write_shard(ctx: JobContext, shard: _Shard, pool: Executor) -> None:
    name, data = shard.take()
    ctx.put_many([(image_key(ctx.job_id, name), data, "data")], pool)


class _Shard:
    """Up to SHARD_IMAGES samples as one object: `samples-<first index>.npz` (`images`, uint8
    N x H x W x C) or `samples-<first index>.tar` (`000000.png`..., byte-for-byte the files `png`
    would write, with fixed metadata so the same samples make the same tar)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.first = 0
        self.images: list[np.ndarray] = []
        self.pngs: list[tuple[int, bytes]] = []

    @property
    def count(self) -> int:
        return len(self.images) if self.fmt == "npz" else len(self.pngs)

    @property
    def full(self) -> bool:
        return self.count >= SHARD_IMAGES

    def add(self, index: int, image: np.ndarray, png: bytes | None) -> None:
        if not self.count:
            self.first = index
        if self.fmt == "npz":
            self.images.append(image)
        else:
            assert png is not None
            self.pngs.append((index, png))

    def take(self) -> tuple[str, bytes]:
        """(file name, bytes) of the shard; empties it."""
        buffer = io.BytesIO()
        if self.fmt == "npz":
            np.savez(buffer, images=np.stack(self.images))
        else:
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for index, png in self.pngs:
                    info = tarfile.TarInfo(f"{index:06d}.png")
                    info.size, info.mtime, info.mode = len(png), 0, 0o644
                    tar.addfile(info, io.BytesIO(png))
        name = f"samples-{self.first:06d}.{self.fmt}"
        self.images, self.pngs = [], []
        return name, buffer.getvalue()
