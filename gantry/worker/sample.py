"""The sample phase: samples, an interpolation, latent arithmetic, images for prompts, or
super-resolved inputs from a train job's checkpoint, written under `jobs/<id>/images/`."""

from __future__ import annotations

from gantry.jobs.keys import image_key
from gantry.jobs.specs import SampleSpec
from gantry.worker.errors import Stopped
from gantry.worker.run import JobContext, device


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
        from gantry.worker.gan.sampler import sample

        result = sample(checkpoint, count=spec.count, seed=spec.seed, device=torch_device)
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
    ctx.heartbeat(step=len(result.images) or spec.count)
