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


# --- the HTTP API (deploy/docker-compose.yml's `api`, deploy/k8s/api.yaml) --------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _port_after(args: list[str]) -> int:
    return int(args[args.index("--port") + 1])


def test_compose_api_serves_on_every_interface_after_the_migration_and_the_bucket() -> None:
    services = compose()["services"]
    api = services["api"]
    assert api["build"]["dockerfile"] == "deploy/Dockerfile.api"  # no torch in it
    assert api["command"][0] == "serve" and "0.0.0.0" in api["command"]
    assert api["command"][api["command"].index("--workers") + 1] == "2"
    port = _port_after(api["command"])
    health = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in health
    for needed in ("migrate", "make-bucket"):
        assert api["depends_on"][needed] == {"condition": "service_completed_successfully"}, needed
    assert services["migrate"]["command"] == ["db", "upgrade"]
    # The CLI container is a user's: it reaches the API with a token, not the store.
    cli = services["cli"]["environment"]
    assert cli["GANTRY_API_URL"] == f"http://api:{port}" and "GANTRY_API_TOKEN" in cli
    assert not {"GANTRY_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"} & set(cli)
    assert services["cli"]["depends_on"]["api"] == {"condition": "service_healthy"}


def test_compose_keeps_the_database_and_the_objects_in_volumes() -> None:
    spec = compose()
    mounts = {name: spec["services"][name]["volumes"] for name in ("postgres", "minio")}
    assert "/var/lib/postgresql/data" in mounts["postgres"][0] and ":/data" in mounts["minio"][0]
    for mount in [*mounts["postgres"], *mounts["minio"]]:
        volume = mount.split(":")[0]
        assert volume in spec["volumes"], f"{volume}: a named volume, kept across `down` and `up`"


def api_objects() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "api.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_k8s_api_is_probed_ready_on_readyz_and_live_on_healthz() -> None:
    objects = api_objects()
    pod = objects["Deployment"]["spec"]["template"]
    (api,) = pod["spec"]["containers"]
    assert api["args"][0] == "serve" and "0.0.0.0" in api["args"]
    (port,) = api["ports"]
    assert port["containerPort"] == _port_after(api["args"])
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert {"cpu", "memory"} <= set(api["resources"]["requests"])
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["ports"]] == [port["name"]]


def test_every_k8s_image_has_a_pinned_tag() -> None:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        images = re.findall(r"^\s*image:\s*(\S+)", path.read_text(), re.MULTILINE)
        assert images, path
        for image in images:
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest", f"{path.name}: {image}"
