"""API -> Celery (eager) -> task -> work function -> SQL row and S3 objects (moto), in one process.
The only place that runs Celery's eager path: embedded mode calls the work function itself
(tests/api/test_embedded.py), and so do the job runner's tests (tests/worker/)."""

from __future__ import annotations

import boto3

from gantry.api.service import Service
from gantry.jobs.queue import run_in_process
from gantry.jobs.settings import Settings

TINY = {"dataset": "digits", "image_size": 16, "batch_size": 16, "steps": 6, "checkpoint_every": 3}
OPTS = {"ngf": "8", "ndf": "8"}


def _keys(prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket="wiring", Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_submit_runs_the_task_and_lands_in_s3(s3_settings: Settings) -> None:
    svc = Service(s3_settings)
    job = svc.submit_train("dcgan", options=OPTS, **TINY)
    assert job.state == "queued"
    run_in_process(svc.celery, job.kind, job.id)
    job = svc.get(job.id)
    assert job.state == "succeeded", job.error
    assert job.progress.step == 6 and job.attempt == 1
    keys = _keys(f"gantry/jobs/{job.id}/")
    prefix = f"gantry/jobs/{job.id}/"
    for name in (
        "spec.json",
        "checkpoints/step-00000003-attempt-0001.pt",
        "checkpoints/step-00000006-attempt-0001.pt",
    ):
        assert prefix + name in keys
    assert prefix + "checkpoints/latest.json" in keys and prefix + "metrics.jsonl" in keys
    assert {a.kind for a in job.artifacts} >= {"checkpoint", "manifest", "samples", "metrics"}

    # The same seed gives the same images; another seed, others.
    runs = []
    for seed in (5, 5, 6):
        sample = svc.submit_sample(job.id, count=4, seed=seed)
        run_in_process(svc.celery, sample.kind, sample.id)
        assert svc.get(sample.id).state == "succeeded"
        body = boto3.client("s3").get_object(Bucket="wiring", Key=f"gantry/jobs/{sample.id}/images/grid.png")
        runs.append(body["Body"].read())
    assert runs[0] == runs[1] and runs[0] != runs[2]
