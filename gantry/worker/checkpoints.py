"""Finding a train job's checkpoints in object storage (their file format is gan/checkpoint.py).

Every reader goes through here: a resume (`find_resume` in train.py), sample and evaluate jobs, and a
run that starts from another job's checkpoint. They follow the manifest, which names each checkpoint
it keeps by its exact key, or list a step's keys; they never format a key to read it (a checkpoint's
key names the attempt that wrote it: gantry.jobs.keys).

- `latest`: the newest checkpoint that loads (`newest_that_loads`): the manifest's, else the older
  ones it keeps, newest first, else any other checkpoint of the job from before them. One that is
  missing, truncated or corrupt is skipped, with a warning on the job that reads it.
- A step: the one the manifest names at that step, else the newest attempt's listed at it. One that
  does not load fails the job, naming the step: the user asked for that one.
- `best`: the one the manifest names as best by the run's eval metric (`eval_every`). One that does
  not load fails the job, as a step does.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gantry.jobs import store as db
from gantry.jobs.errors import GantryError
from gantry.jobs.keys import (
    CheckpointEntry,
    Manifest,
    checkpoint_step_prefix,
    checkpoints_at,
    checkpoints_prefix,
    has_attempt,
    is_checkpoint_key,
    manifest_key,
    newest_first,
    warnings_key,
)
from gantry.jobs.storage import ObjectNotFound, ObjectStore

if TYPE_CHECKING:
    from gantry.worker.run import JobContext

log = logging.getLogger(__name__)


def read_manifest(objects: ObjectStore, job_id: str) -> Manifest | None:
    try:
        return Manifest.parse(objects.get_bytes(manifest_key(job_id)))
    except ObjectNotFound:
        return None


def _at_step(objects: ObjectStore, job_id: str, step: int) -> tuple[str, CheckpointEntry | None] | None:
    """(key, the manifest's entry or None) of checkpoint `step`: the manifest's (its writer proved it
    whole), else the newest attempt's of those listed at that step; None when there is none."""
    try:
        manifest = read_manifest(objects, job_id)
    except ValueError:  # a manifest that does not parse names nothing: the listing decides
        manifest = None
    for entry in manifest.checkpoints() if manifest else ():
        if entry.step == step:
            return entry.key, entry
    listed = checkpoints_at(objects.list(checkpoint_step_prefix(job_id, step)), job_id, step)
    return (listed[0], None) if listed else None


def resolve_checkpoint(objects: ObjectStore, job_id: str, ref: str) -> tuple[str, int] | None:
    """(object key, step) of checkpoint `ref` (latest, best or a step) of train job `job_id`, or None.
    Whether it loads is not checked here (see `checkpoint_bytes`)."""
    if ref in ("latest", "best"):
        manifest = read_manifest(objects, job_id)
        named = manifest.best if manifest and ref == "best" else manifest
        return (named.key, named.step) if named else None
    found = _at_step(objects, job_id, int(ref))
    return (found[0], int(ref)) if found else None


@dataclass(frozen=True)
class Loadable:
    """A checkpoint that loads: its entry, its bytes, and the older ones the manifest names."""

    entry: CheckpointEntry
    data: bytes
    history: tuple[CheckpointEntry, ...]


@dataclass(frozen=True)
class Search:
    """What `newest_that_loads` found (None: not one loads), and why each newer one was skipped."""

    found: Loadable | None
    problems: list[str]
    bad: list[str]  # keys of the checkpoints that did not load


def newest_that_loads(ctx: JobContext, job_id: str) -> Search | None:
    """The newest checkpoint of train job `job_id` that loads. None when the job has no manifest: it
    never checkpointed."""
    try:
        manifest = ctx.read(lambda: read_manifest(ctx.objects, job_id))
    except ValueError as exc:  # not a manifest gantry wrote: whole or nothing, so never expected
        problems = [f"the manifest {manifest_key(job_id)} does not parse ({first_line(exc)})"]
        manifest = None
    else:
        if manifest is None:
            return None
        problems = []
    bad: list[str] = []
    named = list(manifest.checkpoints()) if manifest else []
    for rank, entry in enumerate(named):
        data, why = fetch(ctx, entry.key)
        if data is not None:
            why = differs(entry, data)
        if why is None and data is not None:
            return Search(Loadable(entry, data, tuple(named[rank + 1 :])), problems, bad)
        problems.append(f"checkpoint {entry.key} (step {entry.step}) {why}")
        bad.append(entry.key)
    # Not one the manifest names loads (or it names none): any other checkpoint from before them,
    # newest first, its step read from the checkpoint itself. One past them is left alone: it was
    # written by an attempt that died before it moved the manifest (or one fenced out meanwhile).
    tried = {e.key for e in named}
    before = min((e.step for e in named), default=None)
    listed = ctx.read(lambda: ctx.objects.list(checkpoints_prefix(job_id)))
    for key in newest_first(k for k in listed if is_checkpoint_key(k) and k not in tried):
        data, why = fetch(ctx, key)
        step = None
        if data is not None:
            step, why = trial_load(data)
        if step is not None and before is not None and step >= before:
            continue
        if step is not None and data is not None:
            entry = CheckpointEntry(
                step=step, key=key, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
            return Search(Loadable(entry, data, ()), problems, bad)
        problems.append(f"checkpoint {key} {why}")
        bad.append(key)
    return Search(None, problems, bad)


def checkpoint_bytes(ctx: JobContext, train_job_id: str, ref: str) -> tuple[bytes, int]:
    """The bytes and step of checkpoint `ref` of train job `train_job_id`, for `ctx`'s job to read
    (a sample or evaluate job, or a run that starts from it). `latest` falls back past one that does
    not load, with a warning on `ctx`'s job; an explicit step that does not load fails it."""
    if ref == "latest":
        search = newest_that_loads(ctx, train_job_id)
        if search is None:
            raise GantryError(f"job {train_job_id} has no checkpoint 'latest'")
        if search.found is None:
            raise GantryError(
                f"job {train_job_id} has no checkpoint that loads: {'; '.join(search.problems)}"
            )
        entry = search.found.entry
        if search.problems:
            warn(ctx, search.problems, f"used job {train_job_id}'s checkpoint at step {entry.step} instead")
        return search.found.data, entry.step
    if ref == "best":
        manifest = ctx.read(lambda: read_manifest(ctx.objects, train_job_id))
        if manifest is None or manifest.best is None:
            raise GantryError(f"job {train_job_id} has no checkpoint 'best' (it needs eval_every)")
        best = manifest.best
        data, why = fetch(ctx, best.key)
        if data is not None:
            why = differs(best, data)
        if why is not None or data is None:
            raise GantryError(
                f"the best checkpoint (step {best.step}) of job {train_job_id} ({best.key}) {why}"
            )
        return data, best.step
    step = int(ref)
    at = ctx.read(lambda: _at_step(ctx.objects, train_job_id, step))
    if at is None:
        raise GantryError(f"job {train_job_id} has no checkpoint {ref!r}")
    key, named = at
    data, why = fetch(ctx, key)
    if data is not None:
        if named is not None:
            why = differs(named, data)
        else:  # not named by the manifest (retention kept it before manifests had a history)
            found, why = trial_load(data)
            if found is not None and found != step:
                why = f"holds step {found}"
    if why is not None or data is None:
        raise GantryError(f"checkpoint at step {step} of job {train_job_id} ({key}) {why}")
    return data, step


def stray_checkpoints(ctx: JobContext) -> list[str]:
    """The job's checkpoints that carry an attempt and that its manifest does not name: the late
    write of an attempt fenced out after its last lease check, or the last checkpoint of one that
    died before it moved the manifest. Nothing reads them; retention deletes only what a manifest
    named, so the job's end deletes these. (Keys without an attempt are left alone, as retention
    leaves the checkpoints written before manifests named them.)"""
    manifest = ctx.read(lambda: read_manifest(ctx.objects, ctx.job_id))
    if manifest is None:
        return []
    named = {e.key for e in manifest.checkpoints()}
    listed = ctx.read(lambda: ctx.objects.list(checkpoints_prefix(ctx.job_id)))
    return [k for k in listed if is_checkpoint_key(k) and has_attempt(k) and k not in named]


def fetch(ctx: JobContext, key: str) -> tuple[bytes | None, str | None]:
    """The object's bytes, or (None, why) when it is not there."""
    try:
        return ctx.read(lambda: ctx.objects.get_bytes(key)), None
    except ObjectNotFound:
        return None, "is missing"


def differs(entry: CheckpointEntry, data: bytes) -> str | None:
    """Why `data` is not the checkpoint the manifest names (None: it is)."""
    if len(data) != entry.bytes:
        return f"is {len(data):,} bytes, not the {entry.bytes:,} written (truncated or overwritten)"
    if entry.sha256 is not None:
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            return "does not match the SHA-256 recorded when it was written (corrupt)"
        return None
    # A manifest from before gantry recorded checksums: the checkpoint must load.
    step, why = trial_load(data)
    if step is not None and step != entry.step:
        return f"holds step {step}, not {entry.step}"
    return why


def trial_load(data: bytes) -> tuple[int | None, str | None]:
    """(the checkpoint's step, None) when `data` loads as a checkpoint, else (None, why)."""
    from gantry.worker.gan.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(data, map_location="cpu")["step"]), None
    except Exception as exc:  # torch's truncated-archive errors, unpickling refusals, missing keys
        return None, f"does not load ({type(exc).__name__}: {first_line(exc)})"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def warn(ctx: JobContext, problems: list[str], outcome: str) -> None:
    """A warning on `ctx`'s job: in its log and appended to its `warnings.txt`."""
    message = f"{'; '.join(problems)}; {outcome}"
    log.warning("job %s: %s", ctx.job_id, message)
    key = warnings_key(ctx.job_id)
    try:
        before = ctx.read(lambda: ctx.objects.get_bytes(key))
    except ObjectNotFound:
        before = b""
    ctx.put(key, before + f"{db.utcnow().isoformat()} {message}\n".encode(), kind="warnings")
