"""The Celery app a worker process serves: `celery -A gantry.worker.app worker -Q gantry.gpu`.

`gantry worker` wraps that command."""

from __future__ import annotations

from gantry.jobs.queue import make_celery
from gantry.jobs.settings import get_settings

app = make_celery(get_settings())
