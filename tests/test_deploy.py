"""The deployment files (deploy/) hold together: the worker's grace period covers its graceful stop, and
KEDA scales on the work in progress, not on the Redis list. Its query runs against PostgreSQL in
tests/integration/test_scaler_query.py.

PyYAML comes with moto[server] and is pinned in requirements/dev.lock."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# Between the end of GANTRY_STOP_SECONDS and SIGKILL: the hand-back and the worker's exit.
MARGIN_SECONDS = 30


def k8s_objects() -> dict[str, dict[str, Any]]:
    """deploy/k8s/worker.yaml by kind (one object of each kind)."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "worker.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object per kind"
    return by_kind


def scaler_query() -> str:
    """The SQL KEDA's PostgreSQL scaler runs."""
    (trigger,) = k8s_objects()["ScaledObject"]["spec"]["triggers"]
    return trigger["metadata"]["query"]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_the_worker_pod_outlives_its_graceful_stop() -> None:
    pod = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    stop = int(_env(worker)["GANTRY_STOP_SECONDS"])
    assert stop > 0
    assert pod["terminationGracePeriodSeconds"] >= stop + MARGIN_SECONDS


def test_compose_worker_outlives_its_graceful_stop() -> None:
    # Compose sends SIGKILL 10 s after SIGTERM unless stop_grace_period says otherwise.
    worker = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["worker"]
    stop = int(worker["environment"]["GANTRY_STOP_SECONDS"])
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace, worker["stop_grace_period"]
    assert int(grace[1]) >= stop + MARGIN_SECONDS


def test_keda_scales_on_queued_and_running_jobs_not_the_redis_list() -> None:
    objects = k8s_objects()
    scaled = objects["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    # The Redis list is empty while every worker is busy: a trigger on it scales busy workers in.
    assert [t["type"] for t in scaled["triggers"]] == ["postgresql"]
    (trigger,) = scaled["triggers"]
    assert trigger["authenticationRef"]["name"] == objects["TriggerAuthentication"]["metadata"]["name"]
    query = trigger["metadata"]["query"]
    assert re.search(r"\bfrom\s+jobs\b", query, re.IGNORECASE)
    assert "'queued'" in query and "'running'" in query


def test_one_job_per_gpu_sets_the_jobs_per_pod() -> None:
    # `gantry worker --gpus all` runs one process per GPU, each taking one job at a time.
    objects = k8s_objects()
    (worker,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"][:2] == ["gantry", "worker"]
    gpus = int(worker["resources"]["limits"]["nvidia.com/gpu"])
    assert int(worker["resources"]["requests"]["nvidia.com/gpu"]) == gpus
    (trigger,) = objects["ScaledObject"]["spec"]["triggers"]
    assert float(trigger["metadata"]["targetQueryValue"]) == gpus
