"""The local queue (`gantry serve` without GANTRY_BROKER_URL): Kombu's filesystem transport under
GANTRY_HOME/queue. The reaper reads what waits on it, as it reads Redis, so a job whose message waits
behind a long training is not sent again and again."""

from __future__ import annotations

from pathlib import Path

import pytest

from gantry.jobs import store as db
from gantry.jobs.errors import ServiceUnavailable
from gantry.jobs.queue import check_broker, enqueue, make_celery, waiting_job_ids
from gantry.jobs.requeue import requeue_pass
from gantry.jobs.settings import LOCAL_BROKER_URL, Settings


def local(home: Path) -> Settings:
    return Settings(home=home, broker_url=LOCAL_BROKER_URL)


def test_messages_are_files_in_the_home_and_the_reaper_sees_them_waiting(tmp_path: Path) -> None:
    settings = local(tmp_path)
    app = make_celery(settings)
    check_broker(app, LOCAL_BROKER_URL)
    sessions = db.connect(settings.database, create_sqlite=True)
    with db.session_scope(sessions) as s:
        ids = [
            db.create_job(s, kind="train", model="dcgan", spec={}, total_steps=1, parent_job_id=None).id
            for _ in range(2)
        ]
    for job_id in ids:
        enqueue(app, "train", job_id)
    assert len(list((tmp_path / "queue" / "messages").glob("*.msg"))) == 2
    assert waiting_job_ids(app) == set(ids)
    # Both were last sent long "ago" (resend_after=0) but wait on the queue: neither is sent again.
    done = requeue_pass(sessions, app, lease_seconds=None, resend_after=0)
    assert done.sent == [] and done.waiting == 2
    assert len(list((tmp_path / "queue" / "messages").glob("*.msg"))) == 2


def test_a_missing_queue_folder_is_an_unavailable_broker(tmp_path: Path) -> None:
    app = make_celery(local(tmp_path))
    (tmp_path / "queue" / "messages").rmdir()  # e.g. GANTRY_HOME removed under a running service
    with pytest.raises(ServiceUnavailable, match="local queue"):
        check_broker(app, LOCAL_BROKER_URL)
