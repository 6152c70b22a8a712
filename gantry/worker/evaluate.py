"""The evaluate phase: metrics of a train job's checkpoint, by name (gantry.worker.metrics), recorded
on the evaluate job and on the train job. The end of training runs its automatic metrics here too,
and a run with `eval_every` measures its eval metric here every N steps (`measure_during_training`),
keeping the best checkpoint by it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gantry.jobs import store as db
from gantry.jobs.datasets import DATASETS
from gantry.jobs.keys import eval_key
from gantry.jobs.specs import METRICS, EvaluateSpec, TrainSpec, load_train_spec
from gantry.worker.checkpoints import read_manifest, warn
from gantry.worker.errors import Stopped
from gantry.worker.run import JobContext, device

if TYPE_CHECKING:
    from gantry.worker.gan.checkpoint import Checkpoint


def job_cache(ctx: JobContext) -> Any:
    """The metrics' cache in the job's object storage, read and written through its retries and lease."""
    from gantry.worker.metrics.cache import Cache

    return Cache(get_bytes=lambda key: ctx.read(lambda: ctx.objects.get_bytes(key)), put_bytes=ctx.put_object)


def data_loader(ctx: JobContext, spec: TrainSpec, *, train: Any = None) -> Callable[[str], Any]:
    """The train job's data set by split, each loaded once: built-in splits from their loaders, the
    user's data fetched once for both (it has no test split). `train`: the train split, already
    loaded. Split `labelled`: the user's folder or zip with its sub-folders as classes (None where it
    has none), for a model trained without labels."""
    from gantry.worker.data import load_dataset

    loaded: dict[str, Any] = {} if train is None else {"train": train}

    def load(split: str) -> Any:
        if split not in loaded:
            if spec.dataset in DATASETS:
                loaded[split] = load_dataset(
                    spec.dataset, image_size=spec.image_size, seed=spec.seed, split=split
                )
            elif split == "labelled":
                # A model trained without labels on a folder with classes in sub-folders: the
                # metrics that need labels (fd_classifier) read them from the sub-folders.
                loaded[split] = _user_data(ctx, spec, folder_labels=True, quiet=True)
            elif "train" in loaded or "test" in loaded:  # the user's data: one set, either split
                loaded[split] = loaded.get("train", loaded.get("test"))
            else:
                loaded[split] = _user_data(ctx, spec, folder_labels=False)
        return loaded[split]

    return load


def _user_data(ctx: JobContext, spec: TrainSpec, *, folder_labels: bool, quiet: bool = False) -> Any:
    """The train job's own data, fetched and read (`folder_labels`: classes from its sub-folders);
    with `quiet`, None when it cannot be read that way (no sub-folders, an .npz)."""
    from gantry.jobs.errors import InvalidInput
    from gantry.worker.train import load_data

    try:
        with tempfile.TemporaryDirectory(prefix="gantry-data-") as scratch:
            return ctx.read(lambda: load_data(spec, ctx.settings, Path(scratch), folder_labels=folder_labels))
    except InvalidInput:
        if not quiet:
            raise
        return None


def run_metrics(
    ctx: JobContext,
    names: list[str],
    *,
    train_job_id: str,
    spec: EvaluateSpec,
    data: Callable[[str], Any] | None = None,
    train_spec: TrainSpec | None = None,
    state: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Compute `names` on a train job's checkpoint; record them on `ctx`'s job and the train job.
    `data`: the train job's data by split (`data_loader`), when the caller has already read it;
    `train_spec`: the train job's spec, when the caller has it (the train job itself); `state`: the
    checkpoint as the dict it was written from, when the caller has it (the train job itself, just
    after its final checkpoint: the weights as they are in memory, not loaded back from the bytes)."""
    from gantry.worker.metrics import EvalContext, evaluate_each

    if train_spec is None:
        with db.session_scope(ctx.sessions) as s:
            train_spec = load_train_spec(dict(db.get_job(s, train_job_id).spec))
    checkpoint: Checkpoint
    if state is not None:
        checkpoint, step = state, int(state["step"])
    else:
        checkpoint, step = ctx.checkpoint_bytes(train_job_id, spec.checkpoint)
    # A train job's own end-of-training metrics come right after its last progress write: they
    # heartbeat as its steps did, at most every poll (`should_stop`), not at each chunk.
    own = ctx.job_id == train_job_id
    eval_ctx = EvalContext(
        checkpoint=checkpoint,
        step=step,
        train_spec=train_spec,
        spec=spec,
        device=device(),
        save=lambda name, data: ctx.put_later(eval_key(ctx.job_id, name), data, kind="evaluation"),
        should_stop=ctx.should_stop,
        # Each chunk of a long evaluator: the job is alive (its step, the metrics done, stays).
        progress=(lambda done, total: ctx.should_stop()) if own else (lambda done, total: ctx.heartbeat()),
        settings=ctx.settings,
        cache=job_cache(ctx),
        data=data or data_loader(ctx, train_spec),
    )
    values: dict[str, float] = {}
    for i, (name, got) in enumerate(evaluate_each(names, eval_ctx)):
        # Read with another --code-walk than the train job's: the values it changes are named apart.
        got = {METRICS[name].reading_key(key, spec.code_walk): value for key, value in got.items()}
        values.update(got)
        if ctx.should_stop():
            raise Stopped
        # Metrics done is an evaluate job's progress; a train job (auto metrics) keeps its step
        # (and has just polled: `should_stop`).
        if not own:
            ctx.heartbeat(step=i + 1)
    if own:  # with the train job's next write (its end's, at the latest): one transaction fewer
        ctx.pend_metrics(step, values)
    else:
        ctx.record_metrics(step, values, job_ids=[ctx.job_id, train_job_id])
    return values


def measure_during_training(
    ctx: JobContext, spec: TrainSpec, step: int, checkpoint: bytes, *, data: Any
) -> bool:
    """`eval_every`: the eval metric of the weights at `step` (checkpoint bytes), recorded as a point
    of the job's metric series; when it beats the manifest's best, the weights are written as the
    step's checkpoint and named the best (True)."""
    from gantry.worker.metrics import EvalContext, evaluate_each

    name = spec.options.eval_metric
    assert name is not None, "a spec with eval_every names its eval_metric (chosen at submit)"
    info = METRICS[name]
    eval_ctx = EvalContext(
        checkpoint=checkpoint,
        step=step,
        train_spec=spec,
        spec=EvaluateSpec(seed=spec.seed),
        device=device(),
        save=lambda file_name, body: None,
        should_stop=lambda: False,  # the loop checks after the step, and checkpoints before it stops
        progress=lambda done, total: ctx.heartbeat(),
        settings=ctx.settings,
        cache=job_cache(ctx),
        data=data,
        samples=spec.options.eval_samples,
    )
    values = dict(evaluate_each([name], eval_ctx))[name]
    ctx.record_metrics(step, values, job_ids=[ctx.job_id])
    value = values[info.keys[0]]
    manifest = ctx.manifest()
    best = manifest.best if manifest is not None else None
    if best is not None and best.metric == name and not info.improves(value, best.value):
        return False
    options = spec.options
    ctx.checkpoint(
        step,
        checkpoint,
        keep=options.keep_checkpoints,
        keep_every=options.keep_every,
        best=(name, value),
        later=True,
    )
    return True


def save_eval_curve(ctx: JobContext, train_job_id: str, train_spec: TrainSpec) -> None:
    """The train job's eval metric over its steps as a plot in this job's files (eval_every only)."""
    from gantry.worker.metrics.curve import curve_png

    name = train_spec.options.eval_metric
    if not train_spec.options.eval_every or name is None:
        return
    key = METRICS[name].keys[0]
    with db.session_scope(ctx.sessions) as s:
        points = [(m.step, m.value) for m in db.metric_history(s, train_job_id) if m.name == key]
    manifest = ctx.read(lambda: read_manifest(ctx.objects, train_job_id))
    best = manifest.best.step if manifest is not None and manifest.best is not None else None
    ctx.put(
        eval_key(ctx.job_id, f"{key}-over-steps.png"),
        curve_png(key, points, best_step=best),
        kind="evaluation",
    )


def without_missing_labels(
    ctx: JobContext, train_spec: TrainSpec, names: list[str], data: Callable[[str], Any]
) -> list[str]:
    """Every metric that applies (`names`), less the label metrics (fd_classifier, cas...) when the
    user's data turns out to have no labels, which the service cannot read at submit: a warning, so
    the others (fid...) are still measured. Asked for by name, or alone, they fail the job naming
    `dataset`."""
    labelled = [name for name in names if METRICS[name].labelled]
    if not labelled or len(labelled) == len(names) or train_spec.dataset in DATASETS:
        return names
    if getattr(data("train"), "labels", None) is not None:
        return names
    warn(ctx, [f"{train_spec.dataset} has no labels"], f"{', '.join(labelled)} left out")
    return [name for name in names if name not in labelled]


def evaluate_job(ctx: JobContext, spec: EvaluateSpec, parent_job_id: str) -> None:
    """Compute the metrics an evaluate job asks for (or those that apply) and write metrics.jsonl."""
    with db.session_scope(ctx.sessions) as s:
        train_spec = load_train_spec(dict(db.get_job(s, parent_job_id).spec))
    # The worker's own settings decide: an Inception metric asked for where it has no weights fails the job.
    names = train_spec.resolve_metrics(
        spec.metrics, inception_weights=ctx.settings.inception_weights is not None
    )
    data = data_loader(ctx, train_spec)
    if not spec.metrics:
        names = without_missing_labels(ctx, train_spec, names, data)
    run_metrics(ctx, names, train_job_id=parent_job_id, spec=spec, data=data)
    save_eval_curve(ctx, parent_job_id, train_spec)
    ctx.write_metrics_jsonl()
