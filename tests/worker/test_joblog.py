"""A running job's log lines (gantry.worker.joblog): the job's records are collected and written
with its progress, kept through a database blip, never written by an attempt that lost its lease,
and the infrastructure errors it met are on it."""

from __future__ import annotations

import logging
import threading

import pytest

from gantry.jobs import joblogs
from gantry.jobs import store as db
from gantry.jobs.errors import LeaseLost
from gantry.worker.joblog import collecting
from tests.worker.test_fencing import FakeClock, FlakySessions, _context, _job, _take_over

log = logging.getLogger("gantry.worker.train")


@pytest.fixture
def sessions(settings) -> FlakySessions:
    return FlakySessions(db.connect(settings.database))


def _messages(sessions, job_id: str) -> list[str]:
    with db.session_scope(sessions) as s:
        return [row.message for row in joblogs.read(s, job_id)]


def test_the_jobs_own_records_are_collected_and_no_others(caplog) -> None:
    def elsewhere(message: str) -> None:
        thread = threading.Thread(target=log.warning, args=(message,))
        thread.start()
        thread.join()

    with collecting("j1") as handler:
        log.info("job j1: resuming from step 3")  # the job's thread, naming it: the prefix goes
        log.info("loaded 1797 images")  # the job's thread
        log.debug("too fine to keep")
        elsewhere("job j2: another job's line")
        elsewhere("job j1: the reaper saw it")  # another thread, naming the job
    log.info("after the job")
    lines, _ = handler.pending()
    assert [(line.level, line.message) for line in lines] == [
        ("INFO", "resuming from step 3"),
        ("INFO", "loaded 1797 images"),
        ("WARNING", "the reaper saw it"),
    ]


def test_collecting_info_does_not_make_a_quiet_process_print_it(capsys) -> None:
    root = logging.getLogger()
    printed = logging.StreamHandler()  # what the CLI's logging.basicConfig installs
    root.addHandler(printed)
    old = root.level
    root.setLevel(logging.WARNING)
    try:
        with collecting("j1") as handler:
            log.info("job j1: checkpoint at step 4")
            log.warning("job j1: a corrupt checkpoint skipped")
    finally:
        root.removeHandler(printed)
        root.setLevel(old)
    assert len(handler.pending()[0]) == 2
    err = capsys.readouterr().err
    assert "corrupt checkpoint" in err and "checkpoint at step 4" not in err
    assert logging.getLogger("gantry").level == logging.NOTSET  # put back


def test_log_lines_wait_out_a_database_blip_and_land_with_the_progress(settings, sessions) -> None:
    job_id = _job(sessions)
    ctx = _context(settings, sessions, job_id, token=1)
    clock = ctx.database.clock = FakeClock()
    with collecting(job_id) as ctx.joblog:
        log.info("job %s: before the blip", job_id)
        ctx.progress(1, {"loss_D": 1.0})
        sessions.down = True
        log.info("job %s: during the blip", job_id)
        ctx.progress(2, {"loss_D": 1.0})  # the warning that progress is kept is the job's too
        sessions.down = False
        clock.now += 60
        ctx.progress(3, {"loss_D": 1.0})
    lines = _messages(sessions, job_id)
    assert lines[0] == "before the blip" and "during the blip" in lines
    assert any("database unavailable" in line and "progress kept" in line for line in lines)
    assert len(lines) == len(set(lines))  # each written once


def test_an_attempt_that_lost_its_lease_writes_no_line(settings, sessions) -> None:
    job_id = _job(sessions)
    ctx = _context(settings, sessions, job_id, token=1)
    with collecting(job_id) as ctx.joblog:
        assert _take_over(sessions, job_id) == 2
        log.warning("job %s: attempt 1 still thinks it runs", job_id)
        with pytest.raises(LeaseLost):
            ctx.flush()
        ctx.close_log()  # its last best effort is refused too
    lines = _messages(sessions, job_id)
    assert not any("still thinks" in line for line in lines)
    assert any("attempt 1 lost its lease" in line for line in lines)  # the takeover's note


def test_the_stores_own_notes_are_cut_and_trimmed_like_a_runs_lines(settings, sessions) -> None:
    job_id = _job(sessions)
    with db.session_scope(sessions) as s:  # more lines than a job keeps, before the store's note
        joblogs.append(
            s, job_id, [joblogs.Line(db.utcnow(), "INFO", f"line {i}") for i in range(1_100)], token=1
        )
    error = "Traceback: " + "x" * 20_000
    with db.session_scope(sessions) as s:
        assert db.end_held_job(s, job_id, holder="w1:1", attempt=1, state="failed", error=error)
    lines = _messages(sessions, job_id)
    assert len(lines) == joblogs.HEAD_LINES + 1 + joblogs.TAIL_LINES
    assert lines[-1].startswith("failed: Traceback: xxx") and lines[-1].endswith("characters cut]")
    assert len(lines[-1]) < joblogs.MESSAGE_MAX + 100
