"""Progress without a terminal (gantry.api.follow.Plain): plain lines at a steady pace."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from gantry.api import follow
from gantry.api.schemas import JobView, Progress


def _view(state: str, step: int, total: int = 1000) -> JobView:
    return JobView(
        id="j1",
        kind="train",
        model="dcgan",
        state=state,
        attempt=1,
        progress=Progress(step=step, total_steps=total),
        metrics={"images_per_sec": 512.0},
        error=None,
        artifacts=[],
        created_at=datetime.now(UTC),
        started_at=None,
        finished_at=None,
        parent_job_id=None,
        spec={},
    )


def test_plain_progress_prints_every_tenth_of_the_steps_or_ten_seconds_and_each_state() -> None:
    sink = io.StringIO()
    now = [0.0]
    plain = follow.Plain(Console(file=sink, width=200), clock=lambda: now[0])
    plain.update(_view("queued", 0))
    for step in range(0, 1001, 20):  # polled every 20 steps, 0.1 s apart: 51 polls
        now[0] += 0.1
        plain.update(_view("running", step))
    plain.update(_view("succeeded", 1000))
    lines = sink.getvalue().splitlines()
    steps = [line.split("step ")[1].split("/")[0] for line in lines]
    assert steps == ["0", "0", *[str(s) for s in range(100, 1001, 100)], "1000"]
    assert lines[-1].startswith("j1 succeeded") and "512 img/s" in lines[-1] and "(100%)" in lines[-1]
    # A slow job: a line every 10 s even when a tenth of its steps takes longer.
    sink.truncate(0), sink.seek(0)
    slow = follow.Plain(Console(file=sink, width=200), clock=lambda: now[0])
    for step in range(0, 30):
        now[0] += 1.0
        slow.update(_view("running", step, total=10_000))
    assert len(sink.getvalue().splitlines()) == 3  # the state, then at 10 s and 20 s


def test_plain_progress_keeps_each_update_on_one_line_however_narrow_the_output() -> None:
    # Without a terminal rich assumes 80 columns; a job with a few metrics is longer than that.
    sink = io.StringIO()
    plain = follow.Plain(Console(file=sink, width=40))
    view = _view("succeeded", 1000)
    view.metrics |= {"loss_D": 0.464, "loss_G": 1.758}
    plain.update(view)
    (line,) = sink.getvalue().splitlines()
    assert line.startswith("j1 succeeded") and line.endswith("loss_G=1.758"), line
