"""The job lifecycle through the service and the CLI (embedded mode, real tiny runs): names and
tags, `list`'s filters and pages, a job's log, resume with new steps, fine-tuning from another
job, delete, and `watch --json`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput, JobNotFound
from gantry.jobs.settings import Settings
from gantry.jobs.storage import open_store

TINY = {"dataset": "digits", "image_size": 16, "batch_size": 8, "steps": 4, "checkpoint_every": 2}
OPTS = {"ngf": "8", "ndf": "8"}
TINY_ARGS = ["--dataset", "digits", "--image-size", "16", "--batch-size", "8", "--steps", "4"]
TINY_ARGS += ["--checkpoint-every", "2", "--set", "ngf=8", "--set", "ndf=8"]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _count(settings: Settings) -> int:
    with db.session_scope(db.connect(settings.database)) as s:
        return db.count_jobs(s)


def _trained(svc: Service, **fields):
    job = svc.submit_train("dcgan", options=fields.pop("options", OPTS), **(TINY | fields))
    svc.run_embedded(job)
    done = svc.get(job.id)
    assert done.state == "succeeded", done.error
    return done


@pytest.fixture
def svc(settings: Settings) -> Service:
    return Service(settings)


def test_name_and_tags_show_in_status_and_list_and_filter_it(settings) -> None:
    result = run(
        "train",
        "dcgan",
        *TINY_ARGS,
        "--name",
        "digits baseline",
        "--tag",
        "exp:1",
        "--tag",
        "small",
        "--json",
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["name"] == "digits baseline" and job["tags"] == ["exp:1", "small"]
    status = run("status", job["id"])
    assert "digits baseline" in status.output and "exp:1, small" in status.output
    listed = json.loads(run("list", "--tag", "small", "--json").stdout)
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["tags"] == ["exp:1", "small"]
    assert json.loads(run("list", "--tag", "other", "--json").stdout) == []
    table = run("list").output
    assert job["id"] in table and "digits" in table and "baseline" in table
    # A bad tag: exit 2 naming the field and the characters allowed; nothing recorded.
    bad = run("train", "dcgan", *TINY_ARGS, "--tag", "has space")
    assert bad.exit_code == 2 and "tag" in bad.output and "A-Z a-z 0-9" in bad.output
    assert _count(settings) == 1


def test_list_pages_with_a_cursor_and_filters_by_kind_parent_and_date(settings, svc) -> None:
    parent = _trained(svc)
    samples = [svc.submit_sample(parent.id, count=2) for _ in range(3)]  # queued: never run here
    page = svc.list_jobs(kind="sample", limit=2)
    assert [j.id for j in page.jobs] == [samples[2].id, samples[1].id] and page.next_cursor
    rest = svc.list_jobs(kind="sample", limit=2, cursor=page.next_cursor)
    assert [j.id for j in rest.jobs] == [samples[0].id] and rest.next_cursor is None
    assert {j.id for j in svc.list_jobs(parent=parent.id).jobs} == {s.id for s in samples}
    today = datetime.now(UTC).date()
    assert len(svc.list_jobs(since=today.isoformat()).jobs) == 4
    assert svc.list_jobs(until=(today - timedelta(days=1)).isoformat()).jobs == []
    assert len(svc.list_jobs(until=today.isoformat()).jobs) == 4  # a date: the whole of that day
    with pytest.raises(InvalidInput) as info:
        svc.list_jobs(since="last week")
    assert info.value.field == "since" and "ISO" in str(info.value)
    # The CLI says how to get the next page, on stderr, so stdout stays the page itself.
    result = run("list", "--kind", "sample", "--limit", "2", "--json")
    assert len(json.loads(result.stdout)) == 2
    hint = re.search(r"gantry list --kind sample --limit 2 --json --cursor (\S+)", result.stderr)
    assert hint is not None
    last = json.loads(run("list", "--kind", "sample", "--limit", "2", "--json", "--cursor", hint[1]).stdout)
    assert [j["id"] for j in last] == [samples[0].id]
    assert run("list", "--kind", "fit").exit_code == 2


def test_logs_show_the_jobs_lines_and_its_final_error(settings, svc, tmp_path) -> None:
    done = _trained(svc)
    lines = svc.logs(done.id)
    text = "\n".join(line.message for line in lines)
    assert "train attempt 1 started" in text and "checkpoint at step 4" in text and "succeeded" in text
    assert all(line.attempt == 1 and line.level in ("INFO", "WARNING") for line in lines)
    assert svc.logs(done.id, since_id=lines[-2].id) == lines[-1:]
    # Its own data went missing: the failure and its reason are on the log, as ERROR.
    folder = tmp_path / "pictures"
    folder.mkdir()
    job = svc.submit_train("dcgan", options=OPTS, **(TINY | {"dataset": str(folder)}))
    svc.run_embedded(job)
    failed = svc.logs(job.id)
    assert svc.get(job.id).state == "failed"
    assert any(
        line.level == "ERROR" and "failed" in line.message and "Traceback" in line.message for line in failed
    )
    result = run("logs", job.id, "--json")
    assert result.exit_code == 0 and [json.loads(x)["id"] for x in result.stdout.splitlines()] == [
        line.id for line in failed
    ]
    assert "ERROR" in run("logs", job.id).output
    assert run("logs", "nosuchjob").exit_code == 3


def test_the_cli_prints_no_log_lines_of_its_own_job_without_v(settings) -> None:
    result = run("train", "dcgan", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert "checkpoint at step" not in result.output  # they are on `gantry logs`, not the terminal
    job_id = re.search(r"train job (\w+)", result.output)[1]
    assert "checkpoint at step 4" in run("logs", job_id).output


def test_resume_with_more_steps_continues_from_the_checkpoint(settings, svc) -> None:
    done = _trained(svc)
    with db.session_scope(db.connect(settings.database)) as s:  # as when its worker failed it
        db.finish_job(s, done.id, state="failed", error="RuntimeError: out of memory")
    for steps, words in ((4, "last checkpoint is at step 4"), (0, "greater than or equal to 1")):
        with pytest.raises(InvalidInput) as info:
            svc.resume(done.id, steps=steps)
        assert info.value.field == "steps" and words in str(info.value)
    job = svc.resume(done.id, steps=6)
    assert job.state == "queued" and job.attempt == 2 and job.progress.total_steps == 6
    svc.run_embedded(job)
    job = svc.get(done.id)
    assert job.state == "succeeded" and job.progress.step == 6 and job.spec["steps"] == 6
    log = "\n".join(line.message for line in svc.logs(done.id))
    assert "resumed: queued again as attempt 2, steps 4 -> 6" in log and "resuming from step 4" in log


def test_a_job_fine_tunes_from_another_jobs_g_and_d(settings, svc) -> None:
    import io

    import torch

    from gantry.jobs.keys import checkpoint_key

    base = _trained(svc)
    tuned = _trained(svc, init_from=base.id, seed=3, steps=2, options=OPTS | {"lr": "1e-12"})
    assert "G and D initialised" in "\n".join(line.message for line in svc.logs(tuned.id))
    objects = open_store(settings.storage)
    first = torch.load(io.BytesIO(objects.get_bytes(checkpoint_key(base.id, 4, attempt=1))))
    then = torch.load(io.BytesIO(objects.get_bytes(checkpoint_key(tuned.id, 2, attempt=1))))
    for net in ("G", "D"):
        for name, weight in first[net].items():
            if "running_" not in name and weight.is_floating_point():  # batch norm's stats move at any lr
                assert torch.allclose(then[net][name], weight, atol=1e-6), (net, name)
    # Incompatible weights are refused at submit, naming the option; nothing is recorded.
    before = _count(settings)
    with pytest.raises(InvalidInput) as info:
        svc.submit_train("dcgan", options={"ngf": "16", "ndf": "8"}, init_from=base.id, **TINY)
    assert info.value.field == "init_from" and "ngf=8" in str(info.value) and "ngf=16" in str(info.value)
    with pytest.raises(InvalidInput, match="dcgan job"):
        svc.submit_train("gan", init_from=base.id, dataset="ring8", steps=2)
    with pytest.raises(InvalidInput, match="not a train job with a checkpoint"):
        svc.submit_train("dcgan", options=OPTS, init_from="0123456789ab", **TINY)
    result = run("train", "dcgan", *TINY_ARGS, "--image-size", "32", "--init-from", base.id)
    assert result.exit_code == 2 and "image_size=16" in result.output
    assert _count(settings) == before


def test_delete_removes_a_finished_job_and_refuses_what_users_would_lose(settings, svc) -> None:
    parent = _trained(svc)
    sample = svc.submit_sample(parent.id, count=2)
    svc.run_embedded(sample)
    queued = svc.submit_sample(parent.id, count=2)
    objects = open_store(settings.storage)
    assert objects.list(f"jobs/{parent.id}/")
    # A queued job: cancel it first. A train job with samples: --recursive, or delete them first.
    with pytest.raises(InvalidInput, match="cancel it first"):
        svc.delete(queued.id)
    with pytest.raises(InvalidInput) as info:
        svc.delete(parent.id)
    assert info.value.field == "recursive" and sample.id in str(info.value)
    with pytest.raises(InvalidInput, match="cancel it first"):
        svc.delete(parent.id, recursive=True)  # one of its samples is still queued
    svc.cancel(queued.id)
    # Without a terminal to ask on, the CLI needs --yes.
    refused = run("delete", parent.id, "--recursive")
    assert refused.exit_code == 2 and "--yes" in refused.output
    result = run("delete", parent.id, "--recursive", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.output)["deleted"]) == sorted([parent.id, sample.id, queued.id])
    for gone in (parent.id, sample.id, queued.id):
        with pytest.raises(JobNotFound):
            svc.get(gone)
        assert objects.list(f"jobs/{gone}/") == []
    assert svc.list_jobs().jobs == [] and run("delete", parent.id, "--yes").exit_code == 3


def test_every_job_keeps_its_validated_spec_beside_its_objects(settings, svc) -> None:
    train = _trained(svc)
    sample = svc.submit_sample(train.id, count=2, seed=5)
    svc.run_embedded(sample)
    evaluate = svc.submit_evaluate(train.id, metrics=["fd_classifier"])
    svc.run_embedded(evaluate)
    objects = open_store(settings.storage)
    for job in (train, sample, evaluate):
        kept = json.loads(objects.get_bytes(f"jobs/{job.id}/spec.json"))
        assert kept == svc.get(job.id).spec, job.kind  # sample and evaluate jobs had none
    assert json.loads(objects.get_bytes(f"jobs/{sample.id}/spec.json"))["seed"] == 5


def test_watch_json_streams_one_line_per_change(settings, svc) -> None:
    done = _trained(svc)
    result = run("watch", done.id, "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "state" and events[0]["state"] == "succeeded"
    assert "progress" in kinds and "metric" in kinds and kinds[-1] == "end"
    assert events[-1]["job"]["id"] == done.id and all(e["job_id"] == done.id for e in events)
