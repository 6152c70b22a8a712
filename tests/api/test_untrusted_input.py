"""Input from outside that must never crash or escape: object keys a download would write (`gantry
download` on both stores) and a checkpoint ref in other scripts' digits."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput
from gantry.jobs.keys import job_prefix
from gantry.jobs.settings import Settings


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _train_job(settings: Settings) -> str:
    with db.session_scope(db.connect(settings.database)) as s:
        return db.create_job(s, kind="train", model="dcgan", spec={}, total_steps=10).id


@pytest.mark.parametrize(
    "name", ["..%2f..%2fescaped", "%2e%2e/%2e%2e/escaped", "..\\..\\escaped", "a/%252e%252e/%252e%252e/b"]
)
def test_download_refuses_a_file_store_key_that_would_leave_the_folder(settings, tmp_path, name) -> None:
    job_id = _train_job(settings)
    objects = settings.home / "objects"
    (objects / job_prefix(job_id) / name).parent.mkdir(parents=True, exist_ok=True)
    (objects / job_prefix(job_id) / name).write_bytes(b"evil")
    Service(settings).objects.put_bytes(f"{job_prefix(job_id)}/spec.json", b"{}")
    to = tmp_path / "out/here"
    result = run("download", job_id, "--to", str(to))
    assert result.exit_code == 2, result.output
    assert repr(name) in result.output and "refused" in result.output
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "rest", ["../../escaped", "%2e%2e/%2e%2e/escaped", "..\\..\\escaped", "{tmp}/escaped", "a/../../escaped"]
)
def test_download_refuses_an_s3_key_that_would_leave_the_folder(s3_settings, tmp_path, rest) -> None:
    import boto3

    rest = rest.format(tmp=tmp_path / "dl")  # an absolute path, inside this test's folder
    job_id = _train_job(s3_settings)
    svc = Service(s3_settings)
    svc.objects.put_bytes(f"{job_prefix(job_id)}/spec.json", b"{}")
    # Written past gantry, by anyone who can write to the bucket.
    boto3.client("s3").put_object(Bucket="wiring", Key=f"gantry/{job_prefix(job_id)}/{rest}", Body=b"evil")
    to = tmp_path / "dl/out/here"
    with pytest.raises(InvalidInput) as info:
        svc.download(job_id, to)
    assert info.value.field == "key" and repr(rest) in info.value.message
    result = run("download", job_id, "--to", str(to))
    assert result.exit_code == 2 and repr(rest) in result.output
    assert not (tmp_path / "dl").exists()  # refused before anything was written, inside or out


def test_download_keeps_the_layout_and_prints_the_paths_it_wrote(s3_settings, tmp_path) -> None:
    job_id = _train_job(s3_settings)
    svc = Service(s3_settings)
    svc.objects.put_bytes(f"{job_prefix(job_id)}/spec.json", b"{}")
    svc.objects.put_bytes(f"{job_prefix(job_id)}/images/100%.png", b"png")
    to = tmp_path / "out"
    assert svc.download(job_id, to) == [to / "images/100%.png", to / "spec.json"]
    assert (to / "images/100%.png").read_bytes() == b"png"


@pytest.mark.parametrize("command", ["sample", "evaluate"])
@pytest.mark.parametrize("ref", ["²", "١٢", "12\n", "+5", "1" * 5000, "bestest"])
def test_a_checkpoint_ref_of_anything_but_ascii_digits_exits_2(settings, command, ref) -> None:
    parent = _train_job(settings)
    result = run(command, parent, "--checkpoint", ref)
    assert result.exit_code == 2, result.output
    assert "checkpoint" in result.output and "latest, best or a step number" in result.output
    with db.session_scope(db.connect(settings.database)) as s:
        assert db.count_jobs(s) == 1
