"""Every object key gantry writes, and the checkpoint manifest: docs/architecture.md, "Object layout".

Keys are relative to the storage root (`GANTRY_STORAGE_URL`). The API reads what the worker writes
through these functions only, so the layout is spelled once:

    jobs/<job_id>/spec.json
    jobs/<job_id>/checkpoints/step-00001200-attempt-0002.pt
                                                    one file: weights, optimizers, RNG states, step, spec;
                                                    written by attempt 2 (`step-00001200.pt`: written
                                                    before keys carried the attempt)
    jobs/<job_id>/checkpoints/latest.json           the manifest, written after the checkpoint it names
                                                    (and the `best` one by the eval metric, if any)
    jobs/<job_id>/samples/step-00001200.png         fixed-noise grid while training
    jobs/<job_id>/images/000000.png ... grid.png    what a sample job made (`--format npz|tar`:
                                                    samples-000000.npz ..., 10,000 images a shard)
    jobs/<job_id>/eval/<name>                       an evaluation's figures
    jobs/<job_id>/metrics/from-00001201.jsonl       while training: the points after a checkpoint, up
                                                    to the next one (one segment per checkpoint)
    jobs/<job_id>/metrics.jsonl                     every metric point, written once at the job's end
    jobs/<job_id>/warnings.txt                      what went wrong without failing the job
    uploads/<owner>/<name>                          a data set uploaded through the API
    cache/<name>                                    what metrics cache across jobs: a classifier per
                                                    data set, a data set's Inception features (fidelity/)

Steps in keys are zero-padded, so keys of one kind sort in step order (a listing's newest is its
last; `newest_first` also orders a step's checkpoints by attempt); the step itself is read from the
manifest or the checkpoint, never parsed out of a key.

Why a checkpoint's key names its attempt: every write a worker makes is fenced by its lease, but an
object write is checked before it is sent (gantry.worker.run's `_prove_lease`), so an attempt fenced
out in between (paused, then taken over) can still land one write. With the attempt in the key, that write lands on a key of its
own, never on the checkpoint a newer attempt wrote and whose manifest names it (by its exact key).
Readers follow the manifest, or list a step's keys (`checkpoints_at`): they never format a key to
read. Other objects keep one key per job; see `JobContext.put` for why a late write there is harmless.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict


def job_prefix(job_id: str) -> str:
    """The folder of everything job `job_id` wrote (no trailing slash)."""
    return f"jobs/{job_id}"


def upload_prefix(owner: str) -> str:
    """Where an API user's uploaded data sets live (POST /v1/datasets); no trailing slash."""
    return f"uploads/{owner}"


def spec_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}/spec.json"


_ATTEMPT = "-attempt-"  # between a checkpoint's step and its attempt


def checkpoint_key(job_id: str, step: int, *, attempt: int) -> str:
    """Checkpoint `step` as attempt `attempt` (its lease token) wrote it: each attempt its own key.
    The attempt is zero-padded, so a step's keys sort in attempt order."""
    return f"{checkpoint_step_prefix(job_id, step)}{_ATTEMPT}{attempt:04d}.pt"


def legacy_checkpoint_key(job_id: str, step: int) -> str:
    """Checkpoint `step` as gantry wrote it before keys carried the attempt: still read, never written."""
    return f"{checkpoint_step_prefix(job_id, step)}.pt"


def checkpoint_step_prefix(job_id: str, step: int) -> str:
    """What every key of checkpoint `step` starts with (to list them; see `checkpoints_at`)."""
    return f"{checkpoints_prefix(job_id)}step-{step:08d}"


def checkpoints_prefix(job_id: str) -> str:
    """The folder of a train job's checkpoints and manifest (with its trailing slash, to list)."""
    return f"{job_prefix(job_id)}/checkpoints/"


def is_checkpoint_key(key: str) -> bool:
    """Whether a key of `checkpoints_prefix` is a checkpoint (not the manifest, not a stray file)."""
    return key.rsplit("/", 1)[-1].startswith("step-") and key.endswith(".pt")


def has_attempt(key: str) -> bool:
    """Whether a checkpoint key names the attempt that wrote it (False: written before they did)."""
    return _ATTEMPT in key.rsplit("/", 1)[-1]


def _order(key: str) -> tuple[str, str]:
    # (zero-padded step, zero-padded attempt) as text: a key without an attempt is its step's oldest.
    step, _, attempt = key.rsplit("/", 1)[-1].removesuffix(".pt").partition(_ATTEMPT)
    return step, attempt


def newest_first(checkpoint_keys: Iterable[str]) -> list[str]:
    """Checkpoint keys newest first: by step, then by attempt within a step."""
    return sorted(checkpoint_keys, key=_order, reverse=True)


def checkpoints_at(listed: Iterable[str], job_id: str, step: int) -> list[str]:
    """The keys among `listed` of job `job_id`'s checkpoint `step`, the newest attempt's first."""
    folder, name = checkpoints_prefix(job_id), f"step-{step:08d}"
    return [
        key
        for key in newest_first(listed)
        if key.startswith(folder)
        and "/" not in key[len(folder) :]
        and _order(key)[0] == name
        and is_checkpoint_key(key)
    ]


def manifest_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}/checkpoints/latest.json"


def cache_key(name: str) -> str:
    """Something metrics reuse across jobs and compute once (a classifier trained on a data set, a
    data set's Inception features: `fidelity/<hash>.npz`), named by what it was computed from."""
    return f"cache/{name}"


def samples_key(job_id: str, step: int) -> str:
    return f"{job_prefix(job_id)}/samples/step-{step:08d}.png"


def image_key(job_id: str, name: str) -> str:
    """A sample job's output file `name` (000000.png, grid.png, prompts.json, ...)."""
    return f"{job_prefix(job_id)}/images/{name}"


def eval_key(job_id: str, name: str) -> str:
    return f"{job_prefix(job_id)}/eval/{name}"


def metrics_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}/metrics.jsonl"


def metrics_segments_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}/metrics/"


def metrics_segment_key(job_id: str, first_step: int) -> str:
    """The metric points of steps `first_step` up to a checkpoint's step, written with that
    checkpoint. Named by its first step: a run resumed from a checkpoint rewrites the segment that
    follows it, whatever step it next checkpoints at, so segments never overlap."""
    return f"{metrics_segments_prefix(job_id)}from-{first_step:08d}.jsonl"


def warnings_key(job_id: str) -> str:
    """Warnings about a job that did not fail it (a checkpoint skipped on resume), one a line."""
    return f"{job_prefix(job_id)}/warnings.txt"


class CheckpointEntry(BaseModel):
    """One checkpoint a manifest names: its step, key, size and SHA-256 (None in manifests written
    before gantry recorded it)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    step: int
    key: str
    bytes: int
    sha256: str | None = None


class BestCheckpoint(CheckpointEntry):
    """The checkpoint with the best value of a train job's eval metric so far (`eval_every`): what
    `--checkpoint best` reads. Retention never deletes it."""

    metric: str  # the metric (`eval_metric`) ...
    value: float  # ... and its value at `step`, the best so far in the metric's direction


class Manifest(BaseModel):
    """`checkpoints/latest.json`: the newest checkpoint of a train job, and (`history`, newest first)
    the older checkpoints that retention keeps, which a resume falls back to when the newest does not
    load, and the `best` by the eval metric. It carries the steps, so no reader parses a step out of
    a key. Readers of older manifests (without `sha256`, `history`, `best`) see none of them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    step: int
    key: str
    uri: str
    bytes: int
    time: datetime
    sha256: str | None = None
    history: tuple[CheckpointEntry, ...] = ()
    best: BestCheckpoint | None = None

    def entry(self) -> CheckpointEntry:
        return CheckpointEntry(step=self.step, key=self.key, bytes=self.bytes, sha256=self.sha256)

    def checkpoints(self) -> tuple[CheckpointEntry, ...]:
        """Every checkpoint the manifest names, newest first: its own, its history, and the best
        where it is neither (it then sits at its step's place)."""
        named = [self.entry(), *self.history]
        best = self.best
        if best is not None and all(e.key != best.key for e in named):
            best_entry = CheckpointEntry(step=best.step, key=best.key, bytes=best.bytes, sha256=best.sha256)
            named.append(best_entry)
            named.sort(key=lambda e: e.step, reverse=True)  # stable: a step's entries keep their order
        return tuple(named)

    def dump(self) -> builtins.bytes:
        return self.model_dump_json().encode()

    @classmethod
    def parse(cls, data: builtins.bytes) -> Manifest:
        """Read a manifest (any manifest gantry wrote: they have always carried these fields)."""
        return cls.model_validate_json(data)


def retain(
    newest_first: Sequence[CheckpointEntry], *, keep: int, every: int = 0
) -> tuple[list[CheckpointEntry], list[CheckpointEntry]]:
    """(kept, dropped) of a train job's checkpoints, each newest first: the newest `keep` (0: all),
    and every milestone, a step that is a multiple of `every` (0: none). The newest is always kept,
    so is the one before it when `keep` >= 2: a resume falls back to it should the newest not load."""
    kept: list[CheckpointEntry] = []
    dropped: list[CheckpointEntry] = []
    for rank, entry in enumerate(newest_first):
        milestone = every > 0 and entry.step % every == 0
        (kept if keep == 0 or rank < max(keep, 1) or milestone else dropped).append(entry)
    return kept, dropped
