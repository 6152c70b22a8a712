"""The evaluate phase: metrics of a train job's checkpoint, by name (gantry.worker.metrics), recorded
on the evaluate job and on the train job. The end of training runs its automatic metrics here too."""

from __future__ import annotations

from gantry.jobs import store as db
from gantry.jobs.keys import eval_key
from gantry.jobs.specs import METRICS, EvaluateSpec, load_train_spec
from gantry.worker.errors import Stopped
from gantry.worker.run import JobContext, device


def run_metrics(
    ctx: JobContext, names: list[str], *, train_job_id: str, spec: EvaluateSpec
) -> dict[str, float]:
    """Compute `names` on a train job's checkpoint; record them on `ctx`'s job and the train job."""
    from gantry.worker.metrics import EvalContext, evaluate_each

    with db.session_scope(ctx.sessions) as s:
        train_spec = load_train_spec(dict(db.get_job(s, train_job_id).spec))
    checkpoint, step = ctx.checkpoint_bytes(train_job_id, spec.checkpoint)
    eval_ctx = EvalContext(
        checkpoint=checkpoint,
        step=step,
        train_spec=train_spec,
        spec=spec,
        device=device(),
        save=lambda name, data: ctx.put(eval_key(ctx.job_id, name), data, kind="evaluation"),
        should_stop=ctx.should_stop,
        # Each chunk of a long evaluator: the job is alive (its step, the metrics done, stays).
        progress=lambda done, total: ctx.heartbeat(),
        settings=ctx.settings,
        objects=ctx.objects,
    )
    values: dict[str, float] = {}
    for i, (name, got) in enumerate(evaluate_each(names, eval_ctx)):
        # Read with another --code-walk than the train job's: the values it changes are named apart.
        got = {METRICS[name].reading_key(key, spec.code_walk): value for key, value in got.items()}
        values.update(got)
        if ctx.should_stop():
            raise Stopped
        # Metrics done is an evaluate job's progress; a train job (auto metrics) keeps its step.
        ctx.heartbeat(step=i + 1 if ctx.job_id != train_job_id else None)
    ctx.record_metrics(step, values, job_ids=[ctx.job_id, train_job_id])
    return values


def evaluate_job(ctx: JobContext, spec: EvaluateSpec, parent_job_id: str) -> None:
    """Compute the metrics an evaluate job asks for (or those that apply) and write metrics.jsonl."""
    with db.session_scope(ctx.sessions) as s:
        train_spec = load_train_spec(dict(db.get_job(s, parent_job_id).spec))
    # The worker's own settings decide: an Inception metric asked for where it has no weights fails the job.
    names = train_spec.resolve_metrics(
        spec.metrics, inception_weights=ctx.settings.inception_weights is not None
    )
    run_metrics(ctx, names, train_job_id=parent_job_id, spec=spec)
    ctx.write_metrics_jsonl()
