"""The whole path through real services: CLI -> PostgreSQL -> Redis -> `gantry worker` -> S3."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess

import pytest
from PIL import Image

from tests.integration.conftest import gantry, s3, status, submit, wait_for

pytestmark = pytest.mark.integration

TINY = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--set", "ngf=8", "--set", "ndf=8"]


def _keys(env, job_id: str) -> list[str]:
    listing = s3(env).list_objects_v2(Bucket="gantry-it", Prefix=f"runs/jobs/{job_id}/")
    return sorted(o["Key"].removeprefix(f"runs/jobs/{job_id}/") for o in listing.get("Contents", []))


def test_train_and_sample_jobs_through_a_real_worker(service_env, worker, tmp_path) -> None:
    env = service_env
    train_ids = [
        submit(env, "train", "dcgan", *TINY, "--steps", "40", "--checkpoint-every", "20", "--seed", str(seed))
        for seed in range(3)
    ]
    assert all(status(env, i)["state"] in ("queued", "running", "succeeded") for i in train_ids)
    for job_id in train_ids:
        job = wait_for(env, job_id, ("succeeded",))
        assert job["progress"] == {"step": 40, "total_steps": 40}
        assert {"loss_D", "loss_G", "D_x", "D_G_z", "images_per_sec"} <= set(job["metrics"])
        keys = _keys(env, job_id)
        assert {
            "spec.json",
            "checkpoints/step-00000020-attempt-0001.pt",
            "checkpoints/step-00000040-attempt-0001.pt",
        } <= set(keys)
        assert {"checkpoints/latest.json", "metrics.jsonl"} <= set(keys)
        assert any(k.startswith("samples/") and k.endswith(".png") for k in keys)

    sample_id = submit(env, "sample", train_ids[0], "--count", "16", "--seed", "3")
    sample = wait_for(env, sample_id, ("succeeded",))
    assert sample["parent_job_id"] == train_ids[0] and sample["kind"] == "sample"
    keys = _keys(env, sample_id)
    assert [f"images/{i:06d}.png" for i in range(16)] + ["images/grid.png", "spec.json"] == keys
    body = s3(env).get_object(Bucket="gantry-it", Key=f"runs/jobs/{sample_id}/images/grid.png")["Body"].read()
    grid = Image.open(io.BytesIO(body))
    assert grid.size[0] >= 4 * 16 and grid.size[1] >= 4 * 16
    assert any(a["uri"].startswith("s3://gantry-it/runs/jobs/") for a in sample["artifacts"])

    # A reader sees what the worker wrote: metrics from the store, files through download.
    points = json.loads(gantry(env, "metrics", train_ids[0], "--json").stdout)
    assert {p["name"] for p in points} >= {"loss_D", "loss_G"} and max(p["step"] for p in points) == 40
    gantry(env, "download", sample_id, "--to", str(tmp_path / "dl"))
    assert (tmp_path / "dl/images/grid.png").stat().st_size == len(body)
    listed = json.loads(gantry(env, "list", "--json").stdout)
    assert {sample_id, *train_ids} <= {j["id"] for j in listed}


def test_cancel_stops_a_running_job_within_five_seconds(service_env, worker) -> None:
    env = service_env
    job_id = submit(env, "train", "dcgan", *TINY, "--steps", "1000000", "--checkpoint-every", "50")
    wait_for(env, job_id, ("running",), at_checkpoint=lambda j: j["progress"]["step"] >= 60)
    gantry(env, "cancel", job_id)
    job = wait_for(env, job_id, ("cancelled",), timeout=30)
    assert "checkpoints/latest.json" in _keys(env, job_id)
    # `watch` on a cancelled job reports it and exits 1.
    assert gantry(env, "watch", job_id, check=False).returncode == 1
    assert job["finished_at"] is not None


def test_a_killed_worker_process_hands_the_job_back_and_it_resumes(service_env, worker) -> None:
    env = service_env
    job_id = submit(env, "train", "dcgan", *TINY, "--steps", "300", "--checkpoint-every", "25")
    wait_for(env, job_id, ("running",), past_checkpoint=lambda j: j["progress"]["step"] >= 60)
    children = subprocess.run(
        ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert children, "the worker has no pool process"
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    job = wait_for(env, job_id, ("succeeded",), timeout=240)
    assert job["attempt"] == 2
    assert job["progress"]["step"] == 300
    log = worker.log_path.read_text()
    assert f"job {job_id}: resuming from step" in log
