"""`eval_every`: the eval metric over training steps, and the best checkpoint by it, which retention
keeps and `--checkpoint best` reads (sample and evaluate jobs); refused at submit where there is none."""

from __future__ import annotations

from typing import Any

import pytest

from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.worker.metrics import EvalContext

# A gan (MLP) on 8x8 digits: a few milliseconds a step. Its tracked metric: fd_classifier (lower is
# better), scripted below to improve until step 4, then worsen.
TINY: dict[str, Any] = {"dataset": "digits", "image_size": 8, "batch_size": 8, "checkpoint_every": 2}
SCRIPT = {2: 5.0, 4: 3.0, 6: 4.0, 8: 6.0}


@pytest.fixture
def scripted_metric(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """fd_classifier gives SCRIPT's value at each step; returns the steps it was measured at."""
    measured: list[int] = []

    def fd_classifier(ctx: EvalContext) -> dict[str, float]:
        if ctx.samples is not None:  # during training: eval_samples (an evaluate job: its own count)
            measured.append(ctx.step)
            assert ctx.samples == 300
        return {"fd_classifier": SCRIPT[ctx.step], "real_classifier_accuracy": 0.9}

    monkeypatch.setattr("gantry.worker.metrics.classifier.fd_classifier", fd_classifier)
    return measured


def _images(svc: Service, job_id: str) -> list[bytes]:
    view = svc.get(job_id)
    return [svc.objects.get_bytes(a.key) for a in view.artifacts if a.key.endswith("000000.png")]


def test_the_best_checkpoint_follows_the_metric_and_outlives_retention(
    settings: Settings, scripted_metric: list[int]
) -> None:
    svc = Service(settings)
    options = {"eval_every": "2", "eval_samples": "300", "keep_checkpoints": "1"}
    train = svc.submit_train("gan", steps=8, options=options, **TINY)
    assert svc.run_embedded(train) == "succeeded"
    assert scripted_metric == [2, 4, 6, 8]

    # The metric is a series like the losses.
    series = [(p.step, p.value) for p in svc.metrics(train.id) if p.name == "fd_classifier"]
    assert series == sorted(SCRIPT.items())

    # The best is step 4 (lowest), recorded in the manifest; keep_checkpoints=1 kept it with the newest.
    manifest = keys.Manifest.parse(svc.objects.get_bytes(keys.manifest_key(train.id)))
    assert manifest.step == 8
    assert manifest.best is not None
    assert (manifest.best.step, manifest.best.metric, manifest.best.value) == (4, "fd_classifier", 3.0)
    listed = svc.objects.list(keys.checkpoints_prefix(train.id))
    steps = sorted(int(k.rsplit("step-", 1)[1][:8]) for k in listed if keys.is_checkpoint_key(k))
    assert steps == [4, 8]

    # --checkpoint best samples from step 4: the same images as --checkpoint 4, not latest's.
    jobs = {ref: svc.submit_sample(train.id, checkpoint=ref, count=4) for ref in ("best", "4", "latest")}
    for job in jobs.values():
        assert svc.run_embedded(job) == "succeeded"
    best, at_4, latest = (_images(svc, jobs[ref].id) for ref in ("best", "4", "latest"))
    assert best and best == at_4 and best != latest

    # An evaluate job of the best checkpoint puts the curve in its files, with the values at step 4.
    evaluation = svc.submit_evaluate(train.id, checkpoint="best", metrics=["fd_classifier"])
    assert svc.run_embedded(evaluation) == "succeeded"
    view = svc.get(evaluation.id)
    assert view.metrics["fd_classifier"] == 3.0
    curve = [a.key for a in view.artifacts if a.key.endswith("fd_classifier-over-steps.png")]
    assert curve and svc.objects.get_bytes(curve[0]).startswith(b"\x89PNG")


def test_best_is_refused_at_submit_for_a_job_that_has_none(settings: Settings) -> None:
    svc = Service(settings)
    plain = svc.submit_train("gan", steps=2, **TINY)
    assert svc.run_embedded(plain) == "succeeded"
    tracked = svc.submit_train("gan", steps=2, options={"eval_every": "2"}, **TINY)  # queued: none yet
    for job_id, words in ((plain.id, "eval_every"), (tracked.id, "yet")):
        for submit in (svc.submit_sample, svc.submit_evaluate):
            with pytest.raises(InvalidInput) as info:
                submit(job_id, checkpoint="best")
            assert info.value.field == "checkpoint" and words in info.value.message


def test_a_metric_that_only_worsens_keeps_the_first_measurement(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cas is higher-is-better: falling values keep the first step as the best."""

    def cas(ctx: EvalContext) -> dict[str, float]:
        return {"cas": 1.0 / ctx.step, "gan_train": 1.0 / ctx.step, "real_classifier_accuracy": 0.9}

    monkeypatch.setattr("gantry.worker.metrics.classifier.trained_on_samples", cas)
    svc = Service(settings)
    options = {"eval_every": "2", "labels": "digit", "ngf": "8", "ndf": "8", "nz": "8"}
    fields = {**TINY, "image_size": 16}
    train = svc.submit_train("dcgan", steps=4, options=options, **fields)
    assert svc.get(train.id).state == "queued"
    assert svc.run_embedded(train) == "succeeded"
    manifest = keys.Manifest.parse(svc.objects.get_bytes(keys.manifest_key(train.id)))
    assert manifest.best is not None and (manifest.best.step, manifest.best.metric) == (2, "cas")


def test_fid_is_tracked_with_the_weights_and_refused_without(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval_metric=fid: lower is better, eval_samples generated images; refused at submit where
    GANTRY_INCEPTION_WEIGHTS is unset, and by a worker without it (the weights are its to read)."""
    drawn: list[int | None] = []

    def fidelity(ctx: EvalContext) -> dict[str, float]:  # torch-fidelity's pass, scripted
        assert ctx.settings.inception_weights == "/weights/inception.pth"  # the worker's settings
        drawn.append(ctx.samples)
        fid = SCRIPT[ctx.step]
        return {
            "fid": fid,
            "kid": fid / 10,
            "kid_std": 0.0,
            "inception_score": 1.0,
            "inception_score_std": 0.0,
        }

    monkeypatch.setattr("gantry.worker.metrics.inception.fidelity", fidelity)
    without = settings.model_copy(update={"inception_weights": None})
    with_weights = settings.model_copy(update={"inception_weights": "/weights/inception.pth"})
    options = {"eval_every": "2", "eval_metric": "fid", "eval_samples": "200"}

    with pytest.raises(
        InvalidInput, match="fid needs the Inception weights: set GANTRY_INCEPTION_WEIGHTS"
    ) as info:
        Service(without).submit_train("gan", steps=8, options=options, **TINY)
    assert info.value.field == "set.eval_metric"

    train = Service(with_weights).submit_train("gan", steps=8, options=options, **TINY)
    assert Service(with_weights).run_embedded(train) == "succeeded"
    assert drawn == [200] * 4
    manifest = keys.Manifest.parse(Service(settings).objects.get_bytes(keys.manifest_key(train.id)))
    assert manifest.best is not None and (manifest.best.step, manifest.best.metric) == (4, "fid")

    # Accepted where it was submitted, run by a worker without the weights: failed before training.
    queued = Service(with_weights).submit_train("gan", steps=8, options=options, **TINY)
    assert Service(without).run_embedded(queued) == "failed"
    failed = Service(settings).get(queued.id)
    assert failed.state == "failed" and "GANTRY_INCEPTION_WEIGHTS" in (failed.error or "")
    assert not Service(settings).objects.exists(keys.manifest_key(queued.id))
