from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from gantry.jobs.errors import InvalidInput
from gantry.jobs.storage import ObjectNotFound, fetch_to_local, open_store, uri_exists


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
