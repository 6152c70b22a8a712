"""Loaded by every process the chaos suite starts (this folder leads its PYTHONPATH): names each
process's PostgreSQL connections `gantry-<pid>` (libpq reads PGAPPNAME when it connects), so the
write audit's triggers can tell which process, hence which attempt, wrote a row. Observation only:
gantry's code and behaviour are unchanged."""

import os


def _name() -> None:
    os.environ["PGAPPNAME"] = f"gantry-{os.getpid()}"


_name()
os.register_at_fork(after_in_child=_name)
