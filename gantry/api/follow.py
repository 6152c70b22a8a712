"""How `watch` and `--wait` show a job as it goes: one `Display` per way of showing it.

- `Bar`: a live progress bar (rich) on stderr, when stdout and stderr are terminals.
- `Plain`: without a terminal (CI logs, `| tee`, nohup), one plain line on stderr at a steady pace:
  on every state change, and otherwise at most every PLAIN_SECONDS seconds or every PLAIN_FRACTION
  of the steps, whichever comes first; a log then reads like `tail`, not like a redrawn bar.
- `JsonLines` (`watch --json`): one JSON object per line on stdout for each change: the state
  (`{"event": "state", ...}`), the step (`"progress"`), each metric's new value (`"metric"`), and
  last the whole job (`"end"`, as `status --json` gives it).

Each gets the job's view (`JobView`) at every poll and says what changed; `unreachable` shows a
service that stopped answering while the watch waits it out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from rich.console import Console

from gantry.api.schemas import JobView

PLAIN_SECONDS = 10.0
PLAIN_FRACTION = 0.1


class Display(Protocol):
    def __enter__(self) -> Display: ...
    def __exit__(self, *exc: object) -> None: ...
    def update(self, job: JobView) -> None: ...
    def unreachable(self, job: JobView, service: str) -> None: ...


def _rate_and_losses(job: JobView) -> tuple[str, str]:
    m = job.metrics
    rate = f"{m['images_per_sec']:.0f} img/s" if "images_per_sec" in m else ""
    losses = "  ".join(f"{k}={m[k]:.3f}" for k in ("loss_D", "loss_G") if k in m)
    return rate, losses


class Quiet:
    def __enter__(self) -> Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, job: JobView) -> None:
        pass

    def unreachable(self, job: JobView, service: str) -> None:
        pass


class Bar(Quiet):
    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def _task(self, job: JobView) -> Any:
        if self.task is None:
            self.task = self.progress.add_task(
                f"{job.id} {job.state}", total=job.progress.total_steps or None, rate="", info=""
            )
        return self.task

    def update(self, job: JobView) -> None:
        rate, info = _rate_and_losses(job)
        self.progress.update(
            self._task(job),
            completed=job.progress.step,
            total=job.progress.total_steps or None,
            description=f"{job.id} {job.state}",
            rate=rate,
            info=info,
        )

    def unreachable(self, job: JobView, service: str) -> None:
        self.progress.update(
            self._task(job), description=f"{job.id} {job.state}", info=f"{service} unreachable, retrying"
        )


class Plain(Quiet):
    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.clock = console, clock
        self.state: str | None = None
        self.step = -1
        self.at = 0.0

    def update(self, job: JobView) -> None:
        step, total = job.progress.step, job.progress.total_steps
        changed = job.state != self.state
        stride = max(1, int(total * PLAIN_FRACTION)) if total else None
        due = step != self.step and (
            self.clock() - self.at >= PLAIN_SECONDS or (stride is not None and step - self.step >= stride)
        )
        if not (changed or due):
            return
        rate, losses = _rate_and_losses(job)
        share = f" ({100 * step / total:.0f}%)" if total else ""
        parts = [f"{job.id} {job.state}", f"step {step}/{total}{share}", rate, losses]
        # One whole line per update, however narrow the terminal (or a pipe's 80 columns): scripts read them.
        self.console.print("  ".join(p for p in parts if p), markup=False, highlight=False, soft_wrap=True)
        self.state, self.step, self.at = job.state, step, self.clock()

    def unreachable(self, job: JobView, service: str) -> None:
        if self.clock() - self.at >= PLAIN_SECONDS:
            self.console.print(
                f"{job.id} {job.state}  {service} unreachable, retrying", markup=False, soft_wrap=True
            )
            self.at = self.clock()


class JsonLines(Quiet):
    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.state: str | None = None
        self.attempt: int | None = None
        self.step: int | None = None
        self.metrics: dict[str, float] = {}

    def _emit(self, view: JobView, event: str, /, **fields: Any) -> None:
        line = {"event": event, "job_id": view.id, "time": datetime.now(UTC).isoformat(), **fields}
        self.write(json.dumps(line, default=str))

    def update(self, job: JobView) -> None:
        if (job.state, job.attempt) != (self.state, self.attempt):
            self._emit(job, "state", state=job.state, attempt=job.attempt, error=job.error)
            self.state, self.attempt = job.state, job.attempt
        if job.progress.step != self.step:
            self._emit(job, "progress", step=job.progress.step, total_steps=job.progress.total_steps)
            self.step = job.progress.step
        for name, value in sorted(job.metrics.items()):
            if self.metrics.get(name) != value:
                self._emit(job, "metric", name=name, value=value, step=job.progress.step)
        self.metrics = dict(job.metrics)

    def unreachable(self, job: JobView, service: str) -> None:
        pass  # the stream goes on when the service is back; nothing changed meanwhile

    def end(self, job: JobView) -> None:
        self._emit(job, "end", job=job.model_dump(mode="json"))
