"""A database of a test's own on the machine's PostgreSQL (GANTRY_TEST_PG_URL), dropped afterwards;
a test skips without the server, or fails under GANTRY_REQUIRE_SERVICES=1."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get("GANTRY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def private_database(prefix: str, *, schema: bool = True) -> Iterator[str]:
    """The SQLAlchemy URL of a new database named `prefix` and a random suffix, at gantry's schema
    (`schema`; else empty, for `gantry db upgrade` to fill)."""
    import psycopg

    from gantry.migrations import upgrade

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        if os.environ.get("GANTRY_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL unavailable: {exc} (GANTRY_REQUIRE_SERVICES=1)")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    name = f"{prefix}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        if schema:
            upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
