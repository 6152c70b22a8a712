"""Exceptions that the job runner (`gantry.worker.run.run_job`) turns into a job state."""

from __future__ import annotations


class Stopped(Exception):
    """The job was asked to stop (cancelled) while it ran: raised by work that polls `should_stop`
    between chunks (sampling, evaluation); the runner records the job as cancelled, not failed."""
