"""API -> Celery (eager) -> task -> work function -> SQL row and S3 objects (moto), in one process."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from gantry.api.service import Service
from gantry.jobs.settings import Settings

TINY = {"dataset": "digits", "image_size": 16, "batch_size": 16, "steps": 6, "checkpoint_every": 3}
OPTS = {"ngf": "8", "ndf": "8"}


@pytest.fixture
def s3_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="wiring")
        # The task reads its settings from the environment, as a worker would.
        monkeypatch.setenv("GANTRY_STORAGE_URL", "s3://wiring/gantry")
        yield Settings()


def _keys(prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket="wiring", Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_submit_runs_the_task_and_lands_in_s3(s3_settings: Settings) -> None:
    svc = Service(s3_settings)
    job = svc.submit_train("dcgan", options=OPTS, **TINY)
    assert job.state == "queued"
    svc.run_embedded(job)
    job = svc.get(job.id)
    assert job.state == "succeeded", job.error
    assert job.progress.step == 6 and job.attempt == 1
    keys = _keys(f"gantry/jobs/{job.id}/")
    prefix = f"gantry/jobs/{job.id}/"
    for name in ("spec.json", "checkpoints/step-00000003.pt", "checkpoints/step-00000006.pt"):
        assert prefix + name in keys
    assert prefix + "checkpoints/latest.json" in keys and prefix + "metrics.jsonl" in keys
    assert {a.kind for a in job.artifacts} >= {"checkpoint", "manifest", "samples", "metrics"}

    # The same seed gives the same images; another seed, others.
    runs = []
    for seed in (5, 5, 6):
        sample = svc.submit_sample(job.id, count=4, seed=seed)
        svc.run_embedded(sample)
        assert svc.get(sample.id).state == "succeeded"
        body = boto3.client("s3").get_object(Bucket="wiring", Key=f"gantry/jobs/{sample.id}/images/grid.png")
        runs.append(body["Body"].read())
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_a_redelivered_train_job_resumes_from_its_checkpoint(s3_settings: Settings, caplog) -> None:
    from gantry.jobs import store as db
    from gantry.worker.work import run_job

    svc = Service(s3_settings)
    job = svc.submit_train("dcgan", options=OPTS, **TINY)
    assert run_job(job.id, settings=s3_settings) == "succeeded"
    # Pretend the worker died after the last checkpoint: the row is `running` with a dead holder.
    with db.session_scope(svc.sessions) as s:
        row = db.get_job(s, job.id)
        row.state, row.worker, row.finished_at = "running", "nohost:1", None
        row.heartbeat_at = db.utcnow().replace(year=2000)
    caplog.set_level("INFO")
    assert run_job(job.id, settings=s3_settings) == "succeeded"
    assert svc.get(job.id).attempt == 2
    assert f"job {job.id}: resuming from step 6" in caplog.text
