"""The evaluate phase (gantry.worker.evaluate): a long evaluation heartbeats and honours cancel."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest

from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.settings import Settings
from gantry.worker.metrics import EvalContext
from gantry.worker.run import run_job


def test_an_evaluation_heartbeats_at_each_chunk_and_stops_when_cancelled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Service(settings)
    train = svc.submit_train("gan", dataset="ring8", steps=10)
    # A checkpoint the evaluator below never loads: the runner checks it against the manifest's
    # size and checksum only.
    key = keys.checkpoint_key(train.id, 10, attempt=1)
    uri = svc.objects.put_bytes(key, b"weights")
    sha256 = hashlib.sha256(b"weights").hexdigest()
    manifest = keys.Manifest(step=10, key=key, uri=uri, bytes=7, time=db.utcnow(), sha256=sha256)
    svc.objects.put_bytes(keys.manifest_key(train.id), manifest.dump())
    evaluation = svc.submit_evaluate(train.id, metrics=["modes_2d"])
    long_ago = db.utcnow().replace(year=2000)

    def row() -> tuple[datetime | None, int, str]:
        with db.session_scope(svc.sessions) as s:
            job = db.get_job(s, evaluation.id)
            return job.heartbeat_at, job.step, job.state

    beats = []

    def slow_modes_2d(ctx: EvalContext) -> dict[str, float]:
        for done in (1, 2):  # two chunks in quick succession: each one heartbeats
            with db.session_scope(svc.sessions) as s:
                db.get_job(s, evaluation.id).heartbeat_at = long_ago
            ctx.report(done, 3)
            beats.append(row())
        svc.cancel(evaluation.id)
        ctx.report(3, 3)  # the next chunk's heartbeat reads the cancel
        raise AssertionError("the evaluation went on after its job was cancelled")

    monkeypatch.setattr("gantry.worker.metrics.modes.modes_2d", slow_modes_2d)
    assert run_job(evaluation.id, settings=settings) == "cancelled"
    assert len(beats) == 2
    for heartbeat_at, step, state in beats:
        assert heartbeat_at is not None and heartbeat_at.year > 2000
        assert step == 0 and state == "running"  # its step is the metrics done: none yet
    assert svc.get(evaluation.id).state == "cancelled"


def test_a_train_jobs_own_metrics_equal_an_evaluation_of_its_final_checkpoint(settings: Settings) -> None:
    """A train job's end-of-training metrics read its weights as the run left them in memory; an
    evaluate job reads the final checkpoint back from storage: the same numbers and the same plot."""
    svc = Service(settings)
    train = svc.submit_train("gan", dataset="ring8", steps=30, checkpoint_every=10)
    assert run_job(train.id, settings=settings) == "succeeded"
    names = {"modes", "high_quality", "reverse_kl"}
    own = {p.name: p.value for p in svc.metrics(train.id) if p.name in names}
    assert set(own) == names and all(p.step == 30 for p in svc.metrics(train.id) if p.name in names)
    own_plot = svc.objects.get_bytes(keys.eval_key(train.id, "scatter-step-00000030.png"))

    evaluation = svc.submit_evaluate(train.id, metrics=["modes_2d"])
    assert run_job(evaluation.id, settings=settings) == "succeeded"
    theirs = {p.name: p.value for p in svc.metrics(evaluation.id) if p.name in names}
    assert theirs == own
    assert svc.objects.get_bytes(keys.eval_key(evaluation.id, "scatter-step-00000030.png")) == own_plot
