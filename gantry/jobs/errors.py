"""The error types that cross the API boundary, each with the CLI exit code it maps to.

README.md, "Commands": 0 done; 1 the job failed or was cancelled; 2 bad input (the message names the field
and the allowed values); 3 no such job; 4 a service is unreachable (named, never a secret).
"""

from __future__ import annotations


class GantryError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class InvalidInput(GantryError):
    """Bad input: raised before anything is written or queued. HTTP 422."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class JobNotFound(GantryError):
    exit_code = 3

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


class ServiceUnavailable(GantryError):
    """A service (database, broker, object storage) cannot be reached or is not ready."""

    exit_code = 4

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service


class JobFailed(GantryError):
    """Training or sampling failed for a reason of its own (recorded on the job, not retried)."""

    exit_code = 1
