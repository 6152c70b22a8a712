"""/v1/jobs/{id}/artifacts and /v1/datasets: what a user lists, fetches and uploads, and what is
refused (another owner's files, keys that leave the job's folder, oversize or fake uploads)."""

from __future__ import annotations

import io
import json
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from gantry.api.schemas import JobView
from gantry.jobs import store as db
from gantry.jobs.keys import manifest_key, metrics_key, samples_key, spec_key
from gantry.jobs.settings import Settings
from gantry.jobs.storage import FileStore
from tests.api.http.conftest import Api, make_api

PNG = b"\x89PNG\r\n\x1a\n" + b"not really an image, served as it is"


def write_outputs(api: Api, job_id: str) -> dict[str, bytes]:
    """Objects of job `job_id` as a worker writes them: each with an artifact row, except spec.json
    (which the worker writes without one)."""
    svc = api.service
    outputs = {
        samples_key(job_id, 100): (PNG, "samples"),
        manifest_key(job_id): (b'{"step": 100}', "manifest"),
        metrics_key(job_id): (b'{"name": "loss_D", "step": 1, "value": 0.5}\n', "metrics"),
        f"jobs/{job_id}/checkpoints/step-00000100.pt": (b"\x00weights", "checkpoint"),
    }
    for key, (data, _) in outputs.items():
        svc.objects.put_bytes(key, data)
    with db.session_scope(svc.sessions) as s:
        for key, (data, kind) in outputs.items():
            db.add_artifact(s, job_id, key=key, kind=kind, size=len(data))
    svc.objects.put_bytes(spec_key(job_id), b'{"model": "dcgan"}')
    return {key: data for key, (data, _) in outputs.items()} | {spec_key(job_id): b'{"model": "dcgan"}'}


def test_artifacts_lists_every_file_download_copies_and_each_fetches(api: Api, tmp_path: Path) -> None:
    job = api.submit(api.alice)
    written = write_outputs(api, job["id"])
    listed = api.client.get(f"/v1/jobs/{job['id']}/artifacts", headers=api.alice).json()
    assert [a["key"] for a in listed] == sorted(written)
    kinds = {a["key"].rsplit("/", 1)[-1]: a["kind"] for a in listed}
    assert kinds["spec.json"] == "spec" and kinds["step-00000100.png"] == "samples"
    assert {a["key"]: a["bytes"] for a in listed} == {k: len(v) for k, v in written.items()}
    # The same set as `gantry download` copies.
    copied = api.service.download(job["id"], tmp_path / "copy")
    assert len(copied) == len(listed)

    for artifact in listed:
        answer = api.client.get(f"/v1/jobs/{job['id']}/artifacts/{artifact['key']}", headers=api.alice)
        assert answer.status_code == 200 and answer.content == written[artifact["key"]]
    grid = api.client.get(f"/v1/jobs/{job['id']}/artifacts/{samples_key(job['id'], 100)}", headers=api.alice)
    assert grid.headers["content-type"] == "image/png"
    assert grid.headers["content-disposition"].startswith("inline")
    checkpoint = f"jobs/{job['id']}/checkpoints/step-00000100.pt"
    weights = api.client.get(f"/v1/jobs/{job['id']}/artifacts/{checkpoint}", headers=api.alice)
    assert weights.headers["content-type"] == "application/octet-stream"
    assert weights.headers["content-disposition"].startswith("attachment")
    metrics = api.client.get(f"/v1/jobs/{job['id']}/artifacts/{metrics_key(job['id'])}", headers=api.alice)
    assert metrics.headers["content-type"] == "application/x-ndjson"


def test_another_owners_artifacts_are_404_as_a_missing_job(api: Api) -> None:
    job = api.submit(api.alice)
    write_outputs(api, job["id"])
    key = samples_key(job["id"], 100)
    for path in (f"/v1/jobs/{job['id']}/artifacts", f"/v1/jobs/{job['id']}/artifacts/{key}"):
        assert api.client.get(path, headers=api.bob).status_code == 404
        assert api.client.get(path, headers=api.admin).status_code == 200
    assert api.client.get("/v1/jobs/nope/artifacts", headers=api.alice).status_code == 404


@pytest.mark.parametrize(
    "raw",
    [
        "{job}/../{other}/secret.txt",
        "{job}/%2e%2e/{other}/secret.txt",
        "{job}/%252e%252e/{other}/secret.txt",
        "{job}%2F..%2F{other}/secret.txt",
        "{job}\\..\\{other}\\secret.txt",
        "{job}%5C..%5C{other}%5Csecret.txt",
        "/{root}/outside.txt",
        "%2F{root}/outside.txt",
        "{job}/spec.json/../../{other}/secret.txt",
        "{job}/samples/",
        "{job}",
        "",
    ],
)
def test_keys_that_leave_the_job_or_are_not_listed_are_404(api: Api, raw: str) -> None:
    job, other = api.submit(api.alice)["id"], api.submit(api.alice)["id"]
    write_outputs(api, job)
    api.service.objects.put_bytes(f"jobs/{other}/secret.txt", b"SECRET")
    assert isinstance(api.service.objects, FileStore)
    root = api.service.objects.path.resolve()
    (root.parent / "outside.txt").write_bytes(b"SECRET")
    key = "jobs/" + raw.format(job=job, other=other, root=str(root.parent).lstrip("/"))
    if raw.startswith(("/", "%2F")):
        key = raw.format(root=str(root.parent).lstrip("/"))
    # Sent as it is: httpx would otherwise resolve the `..` segments before the server saw them.
    url = httpx.URL(scheme="http", host="testserver", raw_path=f"/v1/jobs/{job}/artifacts/{key}".encode())
    answer = api.client.get(url, headers=api.alice)
    assert answer.status_code == 404, (key, answer.status_code)
    assert b"SECRET" not in answer.content


def test_an_object_whose_key_leaves_the_job_is_not_listed(api: Api) -> None:
    job = api.submit(api.alice)["id"]
    folder = api.service.objects.path / "jobs" / job  # type: ignore[attr-defined]
    folder.mkdir(parents=True)
    # A listing can hold what no worker writes: names that decode to `..`, or hold a backslash.
    (folder / "%2e%2e").write_bytes(b"x")
    (folder / "a\\..\\b").write_bytes(b"x")
    (folder / "fine.txt").write_bytes(b"y")
    listed = api.client.get(f"/v1/jobs/{job}/artifacts", headers=api.alice).json()
    assert [a["key"] for a in listed] == [f"jobs/{job}/fine.txt"]


# -- on S3 (moto's server, reached over HTTP as a client would) ------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_api(settings: Settings, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    import boto3

    for var, value in (
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
    ):
        monkeypatch.setenv(var, value)
    bucket = f"files-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    update = {
        "storage_url": f"s3://{bucket}/gantry",
        "s3_endpoint_url": s3_endpoint,
        "api_artifact_url_seconds": 60,
    }
    made = make_api(settings.model_copy(update=update))
    with made.client:
        yield made


def test_on_s3_an_artifact_redirects_to_a_short_lived_url_that_serves_it(s3_api: Api) -> None:
    api = s3_api
    job = api.submit(api.alice)
    written = write_outputs(api, job["id"])
    listed = api.client.get(f"/v1/jobs/{job['id']}/artifacts", headers=api.alice).json()
    assert [a["key"] for a in listed] == sorted(written)
    key = samples_key(job["id"], 100)
    answer = api.client.get(
        f"/v1/jobs/{job['id']}/artifacts/{key}", headers=api.alice, follow_redirects=False
    )
    assert answer.status_code == 307
    location = httpx.URL(answer.headers["location"])
    assert location.path == f"/{api.service.objects.root.removeprefix('s3://')}/{key}".replace("//", "/")
    # GANTRY_API_ARTIFACT_URL_SECONDS (60 here): an absolute expiry (SigV2) or a lifetime (SigV4).
    expires = location.params.get("X-Amz-Expires") or int(location.params["Expires"]) - int(time.time())
    assert 55 <= int(expires) <= 60
    fetched = httpx.get(location)  # no token: the signature is the credential
    assert fetched.status_code == 200 and fetched.content == PNG
    assert fetched.headers["content-type"] == "image/png"
    assert api.client.get(f"/v1/jobs/{job['id']}/artifacts/{key}", headers=api.bob).status_code == 404


def test_on_s3_an_upload_is_stored_listed_and_trainable(s3_api: Api) -> None:
    api = s3_api
    answer = upload_raw(api, api.alice, "flowers.zip", zip_of_images("1.png"))
    assert answer.status_code == 201, answer.text
    dataset = answer.json()["dataset"]
    assert dataset == api.service.objects.uri("uploads/alice/flowers.zip")
    assert [d["dataset"] for d in api.client.get("/v1/datasets", headers=api.alice).json()] == [dataset]
    assert api.submit(api.alice, dataset=dataset)["spec"]["dataset"] == dataset


# -- uploads -------------------------------------------------------------------------------------


def zip_of_images(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, PNG)
    return buffer.getvalue()


def npz_of_images(images: np.ndarray | None = None, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    if images is not None:
        arrays["images"] = images
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def upload_raw(api: Api, who: dict[str, str], name: str, data: bytes) -> httpx.Response:
    return api.client.post("/v1/datasets", params={"name": name}, content=data, headers=who)


def test_an_upload_is_trainable_by_its_owner_only(api: Api) -> None:
    answer = upload_raw(api, api.alice, "flowers.zip", zip_of_images("a/1.png", "a/2.png"))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["dataset"].endswith("/uploads/alice/flowers.zip") and body["owner"] == "alice"
    assert body["bytes"] == len(zip_of_images("a/1.png", "a/2.png")) and len(body["sha256"]) == 64

    job = api.submit(api.alice, dataset=body["dataset"])
    assert job["spec"]["dataset"] == body["dataset"]
    refused = api.client.post(
        "/v1/jobs", json={"kind": "train", "model": "dcgan", "dataset": body["dataset"]}, headers=api.bob
    )
    assert refused.status_code == 422 and "dataset" in refused.text


def test_multipart_upload_of_an_npz_names_it_by_its_filename(api: Api) -> None:
    data = npz_of_images(np.zeros((4, 8, 8, 3), np.uint8), labels=np.arange(4))
    answer = api.client.post(
        "/v1/datasets", files={"file": ("faces.npz", data, "application/octet-stream")}, headers=api.alice
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["dataset"].endswith("/uploads/alice/faces.npz")
    assert api.submit(api.alice, dataset=answer.json()["dataset"])["state"] == "queued"
    # One `file` part and nothing else (a field beside it was taken and ignored).
    extra = api.client.post(
        "/v1/datasets", files={"file": ("more.npz", data)}, data={"note": "x"}, headers=api.alice
    )
    assert extra.status_code == 400 and "fields" in extra.text


def test_uploads_are_listed_to_their_owner_and_admins_and_never_replaced(api: Api) -> None:
    assert upload_raw(api, api.alice, "a.zip", zip_of_images("1.png")).status_code == 201
    assert upload_raw(api, api.bob, "b.zip", zip_of_images("1.png")).status_code == 201
    names = lambda who: [(d["owner"], d["name"]) for d in api.client.get("/v1/datasets", headers=who).json()]  # noqa: E731
    assert names(api.alice) == [("alice", "a.zip")]
    assert names(api.bob) == [("bob", "b.zip")]
    assert names(api.admin) == [("alice", "a.zip"), ("bob", "b.zip")]

    again = upload_raw(api, api.alice, "a.zip", zip_of_images("2.png"))
    assert again.status_code == 422 and "already" in again.text
    assert api.client.delete("/v1/datasets/a.zip", headers=api.bob).status_code == 404
    assert api.client.delete("/v1/datasets/a.zip", headers=api.alice).status_code == 204
    assert names(api.alice) == []


@pytest.mark.parametrize(
    ("name", "data", "field", "words"),
    [
        ("notes.zip", b"just some text, not a zip", "file", "not a .zip or .npz"),
        ("half.zip", zip_of_images("1.png")[:40], "file", "not a readable zip"),
        ("evil.zip", zip_of_images("../../evil.png"), "file", ".."),
        ("abs.zip", zip_of_images("/etc/evil.png"), "file", "absolute"),
        ("empty.zip", zip_of_images("readme.txt"), "file", "no images"),
        ("noimages.npz", npz_of_images(labels=np.arange(3)), "file", "no 'images'"),
        ("floats.npz", npz_of_images(np.zeros((2, 8, 8, 3), np.float32)), "file", "uint8"),
        ("shape.npz", npz_of_images(np.zeros((2, 8, 8, 5), np.uint8)), "file", "shape"),
        ("../up.zip", zip_of_images("1.png"), "name", ".zip or .npz"),
        ("data.tar", zip_of_images("1.png"), "name", ".zip or .npz"),
        ("a/b.zip", zip_of_images("1.png"), "name", ".zip or .npz"),
    ],
    # Not the bytes in the ids: a zip's bytes hold the time it was made, and pytest-xdist's
    # processes must collect the same ids.
    ids=lambda value: "bytes" if isinstance(value, bytes) else None,
)
def test_bad_uploads_are_422_naming_the_field_and_nothing_is_kept(
    api: Api, name: str, data: bytes, field: str, words: str
) -> None:
    answer = upload_raw(api, api.alice, name, data)
    assert answer.status_code == 422, answer.text
    where = "query" if field == "name" else "body"  # ?name=, the file the body
    assert answer.json()["detail"][0]["loc"] == [where, field] and words in answer.text
    assert api.service.objects.list("uploads/") == []


def test_an_upload_without_a_name_is_422(api: Api) -> None:
    answer = api.client.post("/v1/datasets", content=zip_of_images("1.png"), headers=api.alice)
    assert answer.status_code == 422 and "?name=" in answer.text


@pytest.fixture
def small_uploads(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """An API whose uploads are limited to 4 KiB, spooling into a folder the test watches."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    made = make_api(settings.model_copy(update={"api_max_upload_bytes": 4096}))
    with made.client:
        yield made


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversize_upload_is_413_and_leaves_nothing(small_uploads: Api, chunked: bool) -> None:
    api = small_uploads
    big = zip_of_images(*(f"{i}.png" for i in range(200)))
    assert len(big) > 4096
    body: bytes | Iterator[bytes] = (
        iter([big[i : i + 1000] for i in range(0, len(big), 1000)]) if chunked else big
    )
    answer = api.client.post("/v1/datasets", params={"name": "big.zip"}, content=body, headers=api.alice)
    assert answer.status_code == 413 and "GANTRY_API_MAX_UPLOAD_BYTES" in answer.text
    multipart = api.client.post("/v1/datasets", files={"file": ("big.zip", big)}, headers=api.alice)
    assert multipart.status_code == 413
    assert api.service.objects.list("uploads/") == []
    assert list(Path(tempfile.gettempdir()).iterdir()) == []
    small = upload_raw(api, api.alice, "small.zip", zip_of_images("1.png"))
    assert small.status_code == 201, small.text


@pytest.mark.slow
def test_a_job_trains_on_an_uploaded_npz(api: Api) -> None:
    rng = np.random.default_rng(0)
    data = npz_of_images(rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8))
    dataset = upload_raw(api, api.alice, "noise.npz", data).json()["dataset"]
    job = api.submit(api.alice, dataset=dataset, steps=3, batch_size=8, image_size=16)
    assert api.service.run_embedded(JobView(**job)) == "succeeded"
    listed = api.client.get(f"/v1/jobs/{job['id']}/artifacts", headers=api.alice).json()
    assert any(a["kind"] == "checkpoint" for a in listed)
    spec = json.loads(
        api.client.get(
            f"/v1/jobs/{job['id']}/artifacts/jobs/{job['id']}/spec.json", headers=api.alice
        ).content
    )
    assert spec["dataset"] == dataset
