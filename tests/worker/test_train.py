"""The train phase (gantry.worker.train), run by the job runner without Celery."""

from __future__ import annotations

from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.settings import Settings
from gantry.worker.run import run_job

TINY = {"dataset": "digits", "image_size": 16, "batch_size": 16, "steps": 6, "checkpoint_every": 3}
OPTS = {"ngf": "8", "ndf": "8"}


def test_a_redelivered_train_job_resumes_from_its_checkpoint(s3_settings: Settings, caplog) -> None:
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
