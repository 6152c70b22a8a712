"""The CLI's output: rich consoles that end a command quietly when the reader of its output goes
away (`gantry logs JOB_ID | head -1`), as a command that a closed pipe's SIGPIPE killed, never as an
error of gantry's (a broken pipe is an OSError that would otherwise read as a network outage)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
from typing import NoReturn

from rich.console import Console

READER_GONE = 141  # 128 + SIGPIPE: what a shell reports for a command that a closed pipe ended


def reader_gone() -> NoReturn:
    """Exit with READER_GONE, nothing on stderr, and nothing more to flush into the closed pipe."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(READER_GONE)


def stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on its write end),
    as against a broken pipe to a service."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no stdout
        return False


class Output(Console):
    """A rich Console whose broken pipe is `reader_gone` (rich's own exits 1, gantry's "the job
    failed")."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        reader_gone()
