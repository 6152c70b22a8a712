from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from gantry.jobs.errors import InvalidInput
from gantry.jobs.storage import (
    ObjectNotFound,
    UnsafeKey,
    fetch_to_local,
    open_store,
    safe_join,
    safe_relative_key,
    uri_exists,
)


def _exercise(store) -> None:
    uri = store.put_bytes("jobs/a/checkpoints/step-00000010.pt", b"weights")
    store.put_bytes("jobs/a/samples/step-00000010.png", b"png")
    store.put_bytes("jobs/b/spec.json", b"{}")
    assert store.get_bytes("jobs/a/checkpoints/step-00000010.pt") == b"weights"
    assert store.exists("jobs/b/spec.json") and not store.exists("jobs/b/other")
    assert store.list("jobs/a/") == [
        "jobs/a/checkpoints/step-00000010.pt",
        "jobs/a/samples/step-00000010.png",
    ]
    assert uri == store.uri("jobs/a/checkpoints/step-00000010.pt")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("jobs/a/missing")


def test_file_store(tmp_path) -> None:
    store = open_store((tmp_path / "objects").as_uri())
    _exercise(store)
    assert (tmp_path / "objects/jobs/b/spec.json").read_bytes() == b"{}"
    with pytest.raises(ValueError):
        store.put_bytes("../outside", b"x")


@mock_aws
def test_s3_store(monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3").create_bucket(Bucket="gantry-test")
    store = open_store("s3://gantry-test/prefix")
    _exercise(store)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="gantry-test")["Contents"]]
    assert "prefix/jobs/b/spec.json" in keys
    assert store.uri("jobs/b/spec.json") == "s3://gantry-test/prefix/jobs/b/spec.json"


@mock_aws
def test_user_data_uris(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="sets/faces.npz", Body=b"npz")
    s3.put_object(Bucket="data", Key="sets/folder/a.png", Body=b"a")
    s3.put_object(Bucket="data", Key="sets/folder/sub/b.png", Body=b"b")
    assert uri_exists("s3://data/sets/faces.npz") and uri_exists("s3://data/sets/folder")
    assert not uri_exists("s3://data/sets/none.npz")
    assert fetch_to_local("s3://data/sets/faces.npz", tmp_path).read_bytes() == b"npz"
    folder = fetch_to_local("s3://data/sets/folder/", tmp_path)
    assert (folder / "sub/b.png").read_bytes() == b"b"
    (tmp_path / "local.npz").write_bytes(b"x")
    assert uri_exists((tmp_path / "local.npz").as_uri()) and uri_exists(str(tmp_path / "local.npz"))
    with pytest.raises(InvalidInput):
        uri_exists("http://example.com/data.npz")


# --- keys from outside: refused when they would leave their prefix or folder ---------------------

UNSAFE_KEYS = [
    "../outside",  # a parent segment
    "jobs/a/../../outside",
    "/etc/outside",  # absolute
    "jobs\\..\\..\\outside",  # backslashes
    "%2e%2e/outside",  # percent-encoded
    "jobs/a/%2E%2E%2F%2E%2E%2Foutside",
    "..%2foutside",
    "%252e%252e/outside",  # encoded twice
    "jobs//outside",  # an empty segment
    "jobs/./a",
    "jobs/a\x00.png",  # control characters, the first, the last below space, and DEL
    "jobs/a\x1f.png",
    "jobs/\x7f.png",
]


def _file_store(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    return open_store((tmp_path / "root/objects").as_uri())


def _s3_store(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3").create_bucket(Bucket="gantry-test")
    return open_store("s3://gantry-test/prefix")


@mock_aws
@pytest.mark.parametrize("make_store", [_file_store, _s3_store], ids=["file", "s3"])
@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused_on_both_stores(tmp_path, monkeypatch, make_store, key) -> None:
    store = make_store(tmp_path, monkeypatch)
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.uri(key),
    ):
        with pytest.raises(UnsafeKey) as info:
            call()
        assert isinstance(info.value, InvalidInput) and isinstance(info.value, ValueError)
        assert repr(key) in str(info.value) and "refused" in str(info.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    if make_store is _s3_store:
        assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="gantry-test")


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_safe_relative_key_and_safe_join_refuse_each_form(tmp_path, key) -> None:
    with pytest.raises(UnsafeKey, match="refused"):
        safe_relative_key("jobs/a/" + key, "jobs/a/")
    with pytest.raises(UnsafeKey, match="refused"):
        safe_join(tmp_path, key)
    with pytest.raises(UnsafeKey, match="not under"):
        safe_relative_key("jobs/b/x", "jobs/a/")
    # What is allowed: plain relative keys, names with a % that decodes to nothing unsafe.
    assert safe_relative_key("jobs/a/images/100%.png", "jobs/a/") == "images/100%.png"
    assert safe_relative_key("jobs/a/x%20y/..z", "jobs/a/") == "x%20y/..z"
    assert safe_join(tmp_path, "sub/a.png") == tmp_path.resolve() / "sub/a.png"


def test_safe_join_refuses_a_symbolic_link_out_of_its_folder(tmp_path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "folder/link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeKey, match="leaves the folder"):
        safe_join(tmp_path / "folder", "link/x.png")


EVIL_LISTINGS = [
    "sets/evil/../../../escaped.png",
    "sets/evil/%2e%2e/%2e%2e/%2e%2e/escaped.png",
    "sets/evil/..\\..\\..\\escaped.png",
    "sets/evil//tmp/escaped.png",
]


@mock_aws
@pytest.mark.parametrize("evil", EVIL_LISTINGS)
def test_fetch_to_local_refuses_a_listed_key_that_leaves_its_folder(tmp_path, monkeypatch, evil) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="sets/evil/a.png", Body=b"a")
    s3.put_object(Bucket="data", Key=evil, Body=b"overwritten")
    assert evil in [o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"]]
    cache = tmp_path / "worker/cache/job"
    with pytest.raises(InvalidInput) as info:
        fetch_to_local("s3://data/sets/evil/", cache)
    assert info.value.field == "dataset"
    assert repr(evil[len("sets/evil/") :]) in info.value.message
    # Refused before anything was downloaded: nothing anywhere, inside the cache or out of it.
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@mock_aws
@pytest.mark.parametrize("uri", ["s3://data/sets/..", "s3://data/sets/%2e%2e/x", "s3://data/"])
def test_fetch_to_local_refuses_a_uri_that_leaves_its_folder(tmp_path, monkeypatch, uri) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3").create_bucket(Bucket="data")
    with pytest.raises(InvalidInput) as info:
        fetch_to_local(uri, tmp_path / "cache", field="input")
    assert info.value.field == "input"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@mock_aws
def test_fetch_to_local_counts_objects_and_bytes_before_they_fill_the_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="data")
    for i in range(3):
        s3.put_object(Bucket="data", Key=f"sets/many/{i}.png", Body=b"1234")
    s3.put_object(Bucket="data", Key="sets/many/", Body=b"")  # a console's folder marker: skipped
    with pytest.raises(InvalidInput, match=r"3 objects is over the limit of 2 \(GANTRY_MAX_DATA_FILES\)"):
        fetch_to_local("s3://data/sets/many", tmp_path / "a", max_files=2)
    with pytest.raises(InvalidInput, match=r"sets/many/2.png .*limit of 10 bytes \(GANTRY_MAX_DATA_BYTES\)"):
        fetch_to_local("s3://data/sets/many", tmp_path / "b", max_bytes=10)
    folder = fetch_to_local("s3://data/sets/many", tmp_path / "c", max_files=3, max_bytes=12)
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png", "2.png"]


# --- a failed write leaves no temporary file ------------------------------------------------------


def test_put_bytes_leaves_no_temporary_file_when_the_disk_is_full(tmp_path, monkeypatch) -> None:
    import errno
    import os

    store = open_store((tmp_path / "objects").as_uri())
    store.put_bytes("jobs/a/spec.json", b"{}")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f) -> None:  # type: ignore[no-untyped-def]
            self.f = f

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
            self.f.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        store.put_bytes("jobs/a/checkpoints/step-00000010.pt", b"weights")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()) == ["spec.json"]
    assert store.get_bytes("jobs/a/spec.json") == b"{}"


def test_put_bytes_leaves_no_temporary_file_when_the_rename_fails(tmp_path) -> None:
    store = open_store((tmp_path / "objects").as_uri())
    (tmp_path / "objects/jobs/a/metrics.jsonl").mkdir(parents=True)  # a folder where the file goes
    with pytest.raises(OSError):
        store.put_bytes("jobs/a/metrics.jsonl", b"{}\n")
    assert [p for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []


# --- sizes, deletes and multipart uploads -------------------------------------------------------------


@mock_aws
@pytest.mark.parametrize("make_store", [_file_store, _s3_store], ids=["file", "s3"])
def test_size_and_delete_on_both_stores(tmp_path, monkeypatch, make_store) -> None:
    store = make_store(tmp_path, monkeypatch)
    store.put_bytes("jobs/a/checkpoints/step-00000010.pt", b"weights")
    assert store.size("jobs/a/checkpoints/step-00000010.pt") == 7
    with pytest.raises(ObjectNotFound):
        store.size("jobs/a/checkpoints/step-00000020.pt")
    store.delete("jobs/a/checkpoints/step-00000010.pt")
    store.delete("jobs/a/checkpoints/step-00000010.pt")  # gone already: nothing to do
    assert not store.exists("jobs/a/checkpoints/step-00000010.pt")
    assert store.list("jobs/a/") == []
    with pytest.raises(UnsafeKey):
        store.delete("jobs/../../outside")


MiB = 1 << 20


@mock_aws
def test_a_large_body_goes_to_s3_as_a_multipart_upload_and_reads_back_equal(monkeypatch) -> None:
    import os

    from gantry.jobs.storage import S3Store

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="big")
    # S3's smallest part is 5 MiB: thresholds that small make a 12 MiB body three parts.
    store = S3Store("big", "gantry", multipart_bytes=5 * MiB, part_bytes=5 * MiB)
    body = os.urandom(12 * MiB)
    key = "jobs/a/checkpoints/step-00000010.pt"
    assert store.put_bytes(key, body) == "s3://big/gantry/" + key
    # A multipart object's ETag is the digest of its parts' digests, suffixed with their count.
    assert s3.head_object(Bucket="big", Key="gantry/" + key)["ETag"].strip('"').endswith("-3")
    assert store.get_bytes(key) == body and store.size(key) == len(body)
    store.put_bytes("jobs/a/spec.json", b"{}")  # below the threshold: one PUT
    assert "-" not in s3.head_object(Bucket="big", Key="gantry/jobs/a/spec.json")["ETag"]
    assert S3Store("big").multipart_bytes == 64 * MiB  # the default: checkpoints past 64 MiB


@mock_aws
def test_a_multipart_upload_that_fails_leaves_no_object_and_no_parts(monkeypatch) -> None:
    import os

    from botocore.exceptions import ClientError

    from gantry.jobs.errors import is_transient
    from gantry.jobs.storage import S3Store

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="big")
    store = S3Store("big", multipart_bytes=5 * MiB, part_bytes=5 * MiB)
    real_upload_part = store.client.upload_part
    sent: list[int] = []

    def upload_part(**kwargs):  # type: ignore[no-untyped-def]
        sent.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:  # the S3 server fails one part (past boto3's own retries)
            error = {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}
            raise ClientError(error, "UploadPart")
        return real_upload_part(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", upload_part)
    with pytest.raises(ClientError) as failed:
        store.put_bytes("jobs/a/checkpoints/step-00000010.pt", os.urandom(12 * MiB))
    assert 2 in sent and is_transient(failed.value)  # the job's context retries the whole put
    assert not store.exists("jobs/a/checkpoints/step-00000010.pt")
    assert s3.list_multipart_uploads(Bucket="big").get("Uploads", []) == []  # aborted: no parts kept
