"""The SQL store: jobs, their metrics and their artifacts (SQLAlchemy 2).

The schema changes only through Alembic (`gantry/migrations`); `SCHEMA_REVISION` is the revision
this code expects, and `connect()` refuses a database that is not at it (a new SQLite store gets it
on first use).

Fencing: each attempt at a job holds a lease whose token is its attempt number (`claim_job` hands
it out). Every later write a worker makes for the job takes the token and is conditional on it
(`UPDATE jobs ... WHERE id = :id AND attempt = :token AND state = 'running'`, in the same
transaction as the write it guards); a refused write raises LeaseLost, and that attempt stops. A
newer attempt (a takeover after the lease ran out, or a requeue) bumps `attempt`, so no two
attempts ever write one job.

The row, not the queue, says what is to be run: a `queued` job whose message was lost is sent
again (`unsent_jobs`, `mark_sent`), a `running` one whose holder died is queued again
(`requeue_stale`), each through a conditional UPDATE, so two reapers never do either twice.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    lazyload,
    mapped_column,
    relationship,
    sessionmaker,
)

from gantry.jobs.errors import InvalidInput, JobNotFound, LeaseLost, ServiceUnavailable, WrongSchema

SCHEMA_REVISION = "0005"
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
KINDS = ("train", "sample", "evaluate")
NAME_MAX = 200  # characters of a job's name
TAG_MAX = 64  # characters of a tag
TAGS_MAX = 20  # tags per job
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]+$")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_parent_job_id", "parent_job_id"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
    )

    # Not a column: set on the row `claim_job` returns (whether that claim started the job).
    first_start = False

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The attempt number, and the lease token of the attempt that holds the job (see claim_job).
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # Attempts that ended without a word: their holder died or lost its lease (GANTRY_MAX_ATTEMPTS).
    deaths: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    parent_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When its message was last sent to the queue (None: at `created_at`); see `unsent_jobs`.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    name: Mapped[str | None] = mapped_column(String(NAME_MAX), nullable=True)
    # Log lines dropped to keep the job's log bounded (gantry.jobs.joblogs).
    logs_dropped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tag_rows: Mapped[list[JobTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="JobTag.tag", passive_deletes=True
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]


class JobTag(Base):
    """One tag of a job: a row each, so that `list --tag` is an indexed lookup on any database."""

    __tablename__ = "job_tags"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(TAG_MAX), primary_key=True, index=True)


class JobLog(Base):
    """A log line of a job: its own records and the infrastructure errors it met (gantry.jobs.joblogs)."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class ApiToken(Base):
    """An API account's token (gantry.jobs.accounts): only its sha256 is kept, never the token."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "key", name="uq_artifacts_job_key"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- connecting -------------------------------------------------------------------------------


# A pooled connection idle this long is pinged before it is used again (see `_ping_when_idle`).
PING_IDLE_SECONDS = 2.0
# PostgreSQL ends a session whose transaction sat idle this long (see `_end_idle_transactions`).
IDLE_IN_TRANSACTION_SECONDS = 30.0


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for `url`. `options` (PostgreSQL etc., not SQLite) replace the defaults given to
    `create_engine`: the API sizes its pool to its threads and skips the ping (gantry.api.service).
    By default a connection is pinged only when it sat in the pool `PING_IDLE_SECONDS` or more."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets the CLI read progress while a job in the same process writes it.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    ping = options.pop("pool_pre_ping", None)
    engine = create_engine(url, **options, **({"pool_pre_ping": True} if ping else {}))
    if ping is None:
        _ping_when_idle(engine, PING_IDLE_SECONDS)
    if engine.dialect.name == "postgresql":
        _end_idle_transactions(engine, IDLE_IN_TRANSACTION_SECONDS)
    return engine


def _end_idle_transactions(engine: Engine, seconds: float) -> None:
    """Each connection asks PostgreSQL to end its session when a transaction of it sits idle
    `seconds` (idle_in_transaction_session_timeout). A process paused inside a transaction (SIGSTOP,
    a frozen VM, a debugger) held its row locks until it woke: every reaper, a starting worker's
    requeue pass and the takeover of its job waited on them, past the lease. gantry's transactions
    last milliseconds; the woken process's next statement fails as a lost connection, is retried
    on a new one, and is fenced out if its job was taken meanwhile."""
    milliseconds = int(seconds * 1000)

    @event.listens_for(engine, "connect")
    def _set_timeout(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")
        cur.close()
        dbapi_conn.commit()  # a session setting, kept past this transaction


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's `pool_pre_ping` for connections that sat in the pool `idle_seconds` or more: a
    connection the database dropped meanwhile (a restart, an idle timeout) is replaced before use,
    as `pool_pre_ping` does, without a round trip before every transaction of a busy worker (a job's
    writes come a few milliseconds apart). A connection that dies while in use raises, and the
    writes that meet it are retried (gantry.jobs.retry) on a new one: the pool drops every
    connection it held then."""
    import time

    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["gantry_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, proxy):  # type: ignore[no-untyped-def]
        since = record.info.get("gantry_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection is gone ({type(exc).__name__})") from exc


def describe_url(url: str) -> str:
    """The database URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


_REVISION = text("SELECT version_num FROM alembic_version")  # Alembic's stamp


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision stamped in the database; None when it has no gantry schema."""
    try:
        with engine.connect() as conn:
            return conn.execute(_REVISION).scalar()
    except (OperationalError, ProgrammingError) as exc:
        message = str(exc.orig).lower()
        if "no such table" in message or ("does not exist" in message and "alembic_version" in message):
            return None
        raise ServiceUnavailable(
            "database", f"cannot connect to {describe_url(str(engine.url))}", transient=True
        ) from None


def _missing_sqlite_file(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(parsed.database)
        and not Path(parsed.database or "").exists()
    )


def connect(
    url: str, *, check_schema: bool = True, create_sqlite: bool = False, **engine_options: Any
) -> sessionmaker[Session]:
    """A session factory for `url`, after checking that the schema is the one this code expects.

    `create_sqlite`: a SQLite database with no gantry schema yet (a new embedded store) gets it now,
    through the same Alembic migrations as `gantry db upgrade`. Any other database, and a SQLite one
    at another revision, is left to `gantry db upgrade`. `engine_options`: see `make_engine`."""
    engine = make_engine(url, **engine_options)
    if check_schema:
        found = None if _missing_sqlite_file(url) else schema_revision(engine)
        if found is None and create_sqlite and url.startswith("sqlite"):
            from gantry.migrations import upgrade  # Alembic's env imports this module

            upgrade(url)
            found = schema_revision(engine)
        if found != SCHEMA_REVISION:
            raise _wrong_schema(url, found)
    return sessionmaker(engine, expire_on_commit=False)


def check_schema(session: Session) -> None:
    """WrongSchema unless the database is (still) at this code's revision: for a process that
    connected long ago, such as a worker's pool process, which checks it again before each claim
    (one small read in the claim's transaction), since a newer gantry's `gantry db upgrade` may
    have run since."""
    found = session.execute(_REVISION).scalar()
    if found != SCHEMA_REVISION:
        raise _wrong_schema(str(session.connection().engine.url), found)


def _wrong_schema(url: str, found: str | None) -> WrongSchema:
    if found is not None and found.isdigit() and int(found) > int(SCHEMA_REVISION):  # 0001, 0002, ...
        return WrongSchema(
            f"{describe_url(url)} is at schema revision {found}, newer than this gantry's "
            f"({SCHEMA_REVISION}): a newer gantry upgraded it; run that version"
        )
    what = "has no gantry schema" if found is None else f"is at schema revision {found}"
    return WrongSchema(
        f"{describe_url(url)} {what}; this gantry needs revision {SCHEMA_REVISION}. Run `gantry db upgrade`."
    )


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


def autocommit(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions of `factory`'s engine (the same pool) whose statements each commit on their own: no
    BEGIN and COMMIT round trips. For reads only, where each statement seeing its own snapshot is
    what READ COMMITTED gives anyway; a write needs `session_scope`'s transaction."""
    engine = factory.kw["bind"].execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(engine, expire_on_commit=False)


# --- jobs -------------------------------------------------------------------------------------


def new_job_id() -> str:
    return secrets.token_hex(6)


def check_name(name: str | None) -> str | None:
    """A job's name: free text of at most NAME_MAX characters, one line; blank means none."""
    if name is None or not name.strip():
        return None
    name = name.strip()
    if len(name) > NAME_MAX or any(ch in name for ch in "\r\n\0"):
        raise InvalidInput("name", f"a job name is one line of at most {NAME_MAX} characters")
    return name


def check_tag(tag: str) -> str:
    if not (1 <= len(tag) <= TAG_MAX) or not TAG_PATTERN.match(tag):
        raise InvalidInput("tag", f"{tag!r}: a tag is 1 to {TAG_MAX} of the characters A-Z a-z 0-9 _ . : -")
    return tag


def check_tags(tags: Sequence[str] | None) -> list[str]:
    """A job's tags, each checked (`check_tag`), duplicates dropped; at most TAGS_MAX."""
    unique = list(dict.fromkeys(check_tag(tag) for tag in tags or ()))
    if len(unique) > TAGS_MAX:
        raise InvalidInput("tag", f"at most {TAGS_MAX} tags per job, not {len(unique)}")
    return unique


def create_job(
    session: Session,
    *,
    kind: str,
    model: str,
    spec: dict[str, Any],
    total_steps: int,
    parent_job_id: str | None = None,
    owner: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
) -> Job:
    now = utcnow()
    job = Job(
        id=new_job_id(),
        kind=kind,
        model=model,
        state="queued",
        spec=spec,
        attempt=1,
        deaths=0,
        step=0,
        total_steps=total_steps,
        cancel_requested=False,
        parent_job_id=parent_job_id,
        owner=owner,
        created_at=now,
        enqueued_at=now,  # its message is sent right after this row is committed
        name=check_name(name),
        logs_dropped=0,
    )
    job.tag_rows = [JobTag(tag=tag) for tag in check_tags(tags)]
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def count_active_jobs(session: Session, *, owner: str) -> int:
    """Queued + running jobs of `owner`."""
    query = select(func.count()).where(Job.owner == owner, Job.state.in_(("queued", "running")))
    return int(session.scalar(query) or 0)


def _choice(field: str, value: str | None, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        raise InvalidInput(field, f"unknown {field} {value!r}; choose one of {', '.join(allowed)}")


def encode_cursor(job: Job) -> str:
    """An opaque cursor: the (created_at, id) of the last job of a page, which the next page starts
    after. Ordering by both is total, so jobs inserted meanwhile neither repeat nor skip one."""
    moment = aware(job.created_at)
    raw = json.dumps([moment.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, job_id = json.loads(raw)
        return aware(datetime.fromisoformat(moment)), str(job_id)
    except Exception:
        raise InvalidInput(
            "cursor", "not a cursor that `list` handed out (pass next_cursor as given)"
        ) from None


def list_jobs(
    session: Session,
    *,
    state: str | None = None,
    kind: str | None = None,
    model: str | None = None,
    tag: str | None = None,
    parent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    owner: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    models: Sequence[str] | None = None,
) -> tuple[list[Job], str | None]:
    """Jobs newest first (created_at, then id, both descending) matching every filter given, and
    the cursor of the next page (None: this is the last). `since` <= created_at < `until`; `owner`
    None: everyone's. `models`: the model names to accept for `model` (InvalidInput otherwise)."""
    _choice("state", state, STATES)
    _choice("kind", kind, KINDS)
    if models is not None:
        _choice("model", model, models)
    if tag is not None:
        check_tag(tag)
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit", f"{limit}: from 1 to 1000")
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    for column, value in (
        (Job.state, state),
        (Job.kind, kind),
        (Job.model, model),
        (Job.parent_job_id, parent),
        (Job.owner, owner),
    ):
        if value is not None:
            query = query.where(column == value)
    if tag is not None:
        query = query.where(select(JobTag.job_id).where(JobTag.job_id == Job.id, JobTag.tag == tag).exists())
    if since is not None:
        query = query.where(Job.created_at >= since)
    if until is not None:
        query = query.where(Job.created_at < until)
    if cursor is not None:
        moment, last_id = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < moment, and_(Job.created_at == moment, Job.id < last_id)))
    jobs = list(session.scalars(query))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return jobs, (encode_cursor(jobs[-1]) if more else None)


def children(session: Session, job_id: str) -> list[Job]:
    """The jobs that name `job_id` as their parent (its sample and evaluate jobs)."""
    return list(session.scalars(select(Job).where(Job.parent_job_id == job_id).order_by(Job.created_at)))


def delete_job_rows(session: Session, job_id: str) -> None:
    """Remove a job's rows: its logs, tags, artifacts, metrics and the job itself. The caller
    checks that it may (finished, no children left)."""
    for table in (JobLog, JobTag, Artifact, Metric):
        session.execute(
            delete(table).where(table.job_id == job_id).execution_options(synchronize_session=False)
        )
    session.execute(delete(Job).where(Job.id == job_id).execution_options(synchronize_session=False))
    session.expunge_all()


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
@overload
def aware(moment: datetime | None) -> datetime | None: ...
def aware(moment: datetime | None) -> datetime | None:
    """`moment` with its time zone: SQLite hands back naive datetimes, and everything stored is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _note(session: Session, job_id: str, attempt: int, level: str, message: str) -> None:
    """A line on the job's log (gantry.jobs.joblogs) saying what happened to it from outside its
    run, written in the transaction that makes it so: cut and trimmed as the run's own lines are."""
    from gantry.jobs import joblogs  # it builds on this module

    joblogs.note(session, job_id, attempt=attempt, level=level, message=message)


class JobBusy(Exception):
    """Another worker holds the job and may be alive: look again once its lease runs out."""

    def __init__(self, job_id: str, holder: str, retry_in: float) -> None:
        super().__init__(f"job {job_id} is held by {holder}; retry in {retry_in:.0f}s")
        self.retry_in = retry_in


def worker_name() -> str:
    """`host:pid` of this process, recorded on the jobs it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_may_be_alive(holder: str | None, claimant: str) -> bool:
    # On the same host a dead holder is certain (its pid is gone): take over at once, as when a
    # worker's child process was killed and Celery handed the message back. Elsewhere, only the
    # lease tells.
    host, _, pid = (holder or "").rpartition(":")
    if host != claimant.rpartition(":")[0] or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def died_message(deaths: int) -> str:
    return (
        f"its worker died {deaths} times (out of memory? its machine lost? `gantry logs` says how each "
        "attempt ended); GANTRY_MAX_ATTEMPTS ends a job after that many deaths. Its checkpoints are kept."
    )


def claim_job(
    session: Session,
    job_id: str,
    *,
    worker: str,
    lease_seconds: int,
    token: int | None = None,
    max_attempts: int | None = None,
) -> Job | None:
    """Take a job for `worker` (`host:pid`); the returned row's `attempt` is this attempt's lease
    token. None when it is not to be run (finished, cancelled, or failed here after too many deaths).

    A job found `running` was held by an attempt that did not finish:
    - `token` equal to its attempt: a retry of that same attempt (the task handed it back after a
      transient error, so that run has ended): it goes on with the same token, at once.
    - held by `worker` itself (this very process; a process runs its jobs one after another, so its
      earlier run has ended): taken over at once with `attempt + 1`, not counted as a death.
    - otherwise, when its heartbeat is stale or its holder's process is gone from this host: taken
      over with `attempt + 1`, and counted as a death. Held by a worker that may be alive: JobBusy.
    The trainer of a taken-over job resumes from its last checkpoint. A job whose `deaths` reached
    `max_attempts` ends `failed` with the reason instead of running again.

    The returned row's `first_start` says whether this claim started the job (it never ran before,
    so nothing of it is in object storage). The usual case, a queued job taken by its first message,
    is one statement (an UPDATE that returns the row); every other case reads the row locked and
    decides as above."""
    now = utcnow()
    if token is None:
        never_started = [
            Job.id == job_id, Job.state == "queued", Job.started_at.is_(None), Job.cancel_requested.is_(False),
        ]  # fmt: skip
        if max_attempts is not None:
            never_started.append(Job.deaths < max_attempts)
        taken = session.scalars(
            update(Job)
            .where(*never_started)
            .values(
                state="running",
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                error=None,
            )
            .returning(Job)
            # Its tags when read, not with the row: a worker has no use for them (a query saved).
            .options(lazyload(Job.tag_rows))
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if taken is not None:
            taken.first_start = True
            return taken
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
    if job is None:
        raise JobNotFound(job_id)
    if job.state in TERMINAL:
        return None
    if job.cancel_requested:
        job.state, job.finished_at = "cancelled", now
        return None
    if job.state == "running":
        if token is not None and token == job.attempt:
            pass  # the same attempt, retried: same token, no death, no wait
        elif job.worker == worker:
            job.attempt += 1
            _note(
                session,
                job_id,
                job.attempt,
                "WARNING",
                f"attempt {job.attempt - 1} ended on {worker} without recording an end; "
                f"attempt {job.attempt} takes over",
            )
        else:
            heartbeat = aware(job.heartbeat_at) or now
            left = timedelta(seconds=lease_seconds) - (now - heartbeat)
            if left.total_seconds() > 0 and _holder_may_be_alive(job.worker, worker):
                raise JobBusy(job_id, job.worker or "?", left.total_seconds())
            job.attempt += 1
            job.deaths = (job.deaths or 0) + 1
            _note(
                session,
                job_id,
                job.attempt,
                "WARNING",
                f"attempt {job.attempt - 1} lost its lease: its holder {job.worker} is gone or last "
                f"heartbeat {(now - heartbeat).total_seconds():.0f} s ago; attempt {job.attempt} "
                f"takes over on {worker} (its later writes are refused)",
            )
    if max_attempts is not None and (job.deaths or 0) >= max_attempts:
        job.state, job.finished_at, job.worker = "failed", now, None
        job.error = died_message(job.deaths)
        _note(session, job_id, job.attempt, "ERROR", job.error)
        return None
    job.first_start = job.started_at is None
    job.state = "running"
    job.worker = worker
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    job.error = None
    return job


def _fence(session: Session, job_id: str, token: int, **values: Any) -> bool:
    """The guard of every fenced write: refresh the heartbeat (and `values`) only while attempt
    `token` holds the running job, else LeaseLost. The row stays locked to the end of the
    transaction, so the write it guards cannot interleave with a takeover. Returns whether a cancel
    was requested (read by the same statement).

    Once per transaction: a second fence of the same job and token without `values` (the writes
    of one transaction that each guard themselves: artifacts, metrics, log lines) is answered by
    the first, whose lock still holds (`fenced`)."""
    if not values and (known := fenced(session, job_id, token)) is not None:
        return known
    cancel = session.scalar(
        update(Job)
        .where(Job.id == job_id, Job.attempt == token, Job.state == "running")
        .values(heartbeat_at=utcnow(), **values)
        .returning(Job.cancel_requested)
        .execution_options(synchronize_session=False)
    )
    if cancel is None:
        raise LeaseLost(job_id, token)
    if "state" not in values:  # a job this write ends is fenced no more
        session.info["fenced"] = (session.get_transaction(), job_id, token, bool(cancel))
    else:
        session.info.pop("fenced", None)
    return bool(cancel)


def fenced(session: Session, job_id: str, token: int) -> bool | None:
    """Whether `session`'s current transaction has fenced job `job_id` for attempt `token`
    (`_fence`): the cancel flag it read then, or None if it has not."""
    memo = session.info.get("fenced")
    if memo is None or memo[0] is None or memo[0] is not session.get_transaction():
        return None
    _, fenced_job, fenced_token, cancel = memo
    return cancel if (fenced_job, fenced_token) == (job_id, token) else None


def check_lease(session: Session, job_id: str, *, token: int) -> bool:
    """A heartbeat that proves attempt `token` still holds the job (LeaseLost if not); returns
    True when a cancel was requested."""
    return _fence(session, job_id, token)


def heartbeat(session: Session, job_id: str, *, step: int | None = None, token: int | None = None) -> bool:
    """Record progress and liveness; returns True when a cancel was requested. With `token`, only
    while that attempt holds the job (LeaseLost if not)."""
    values: dict[str, Any] = {} if step is None else {"step": step}
    if token is not None:
        return _fence(session, job_id, token, **values)
    cancel = session.scalar(
        update(Job)
        .where(Job.id == job_id)
        .values(heartbeat_at=utcnow(), **values)
        .returning(Job.cancel_requested)
    )
    return bool(cancel)


def finish_job(
    session: Session,
    job_id: str,
    *,
    state: str,
    error: str | None = None,
    token: int | None = None,
    step: int | None = None,
) -> None:
    """Record a final state. With `token`, only while that attempt holds the job (LeaseLost if
    not), and its `step` when given (the run's last progress, not yet written)."""
    if state not in TERMINAL:
        raise ValueError(state)
    if token is not None:
        progress = {} if step is None else {"step": step}
        _fence(session, job_id, token, state=state, error=error, finished_at=utcnow(), **progress)
        return
    session.execute(
        update(Job).where(Job.id == job_id).values(state=state, error=error, finished_at=utcnow())
    )


def request_cancel(session: Session, job_id: str) -> Job:
    """Queued jobs are cancelled at once; running ones stop at their next progress check."""
    job = get_job(session, job_id)
    if job.state in TERMINAL:
        raise InvalidInput("job_id", f"job {job_id} already {job.state}; only queued or running jobs cancel")
    job.cancel_requested = True
    if job.state == "queued":
        job.state, job.finished_at = "cancelled", utcnow()
    _note(
        session,
        job_id,
        job.attempt,
        "INFO",
        "cancel requested" + (" while queued: cancelled" if job.state == "cancelled" else ""),
    )
    return job


def hand_back(
    session: Session,
    job_id: str,
    *,
    token: int | None = None,
    holder: str | None = None,
    fence_out: bool = False,
) -> str:
    """Give the running job back to the queue (a worker's graceful stop): `queued`, not a death;
    the caller sends its message. Only while attempt `token` (or process `holder`) holds it, else
    LeaseLost. The attempt number stays when the run has ended (its last write is this one);
    `fence_out` bumps it, for a run that may still be writing (past GANTRY_STOP_SECONDS), whose
    later writes are then refused. Returns the job's kind."""
    values: dict[str, Any] = {"state": "queued", "worker": None, "enqueued_at": utcnow()}
    if fence_out:
        values["attempt"] = Job.attempt + 1
    query = update(Job).where(Job.id == job_id, Job.state == "running")
    if token is not None:
        query = query.where(Job.attempt == token)
    if holder is not None:
        query = query.where(Job.worker == holder)
    result = session.execute(query.values(**values).execution_options(synchronize_session=False))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise LeaseLost(job_id, token or 0)
    kind, attempt = session.execute(select(Job.kind, Job.attempt).where(Job.id == job_id)).one()
    if fence_out:
        _note(
            session,
            job_id,
            attempt,
            "WARNING",
            f"handed back to the queue without a new checkpoint (its worker was stopping and the run did "
            f"not stop in time); attempt {attempt - 1}'s later writes are refused",
        )
    return str(kind)


def requeue_stale(session: Session, *, lease_seconds: float | None, host: str | None = None) -> list[str]:
    """Running jobs whose holder stopped heartbeating for `lease_seconds` (None: none by age) and,
    with `host`, those held by a process gone from this host (at once) go back to `queued` with `attempt + 1`,
    counted as a death; the caller sends their messages. Each is a conditional UPDATE on the
    attempt it saw, so of two reapers one requeues the job and the other finds nothing to do."""
    cutoff = None if lease_seconds is None else utcnow() - timedelta(seconds=lease_seconds)
    running = session.execute(
        select(Job.id, Job.attempt, Job.worker, Job.heartbeat_at).where(Job.state == "running")
    ).all()
    requeued = []
    for job_id, attempt, holder, beat in running:
        stale = cutoff is not None and (beat is None or aware(beat) < cutoff)  # type: ignore[operator]
        dead_here = host is not None and not _holder_may_be_alive(holder, f"{host}:0")
        if not (stale or dead_here):
            continue
        # Its row, taken without waiting (PostgreSQL; SQLite has one writer at a time). A transaction
        # holding it is its holder's: writing now, or paused in the middle (SIGSTOP, a frozen VM),
        # which PostgreSQL ends (IDLE_IN_TRANSACTION_SECONDS) for a later pass to find the row free.
        # Waiting on it stalled this pass, and a starting worker with it (`gantry worker` runs one
        # before Celery starts), for as long.
        free = session.execute(
            select(Job.id)
            .where(Job.id == job_id, Job.attempt == attempt, Job.state == "running")
            .with_for_update(skip_locked=True)
        ).first()
        if free is None:
            continue  # held by a transaction, or no longer this attempt's
        # Its holder ended without a word: a death (GANTRY_MAX_ATTEMPTS), and its token is void.
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.attempt == attempt, Job.state == "running")
            .values(
                state="queued",
                attempt=attempt + 1,
                worker=None,
                deaths=func.coalesce(Job.deaths, 0) + 1,
                enqueued_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            requeued.append(job_id)
            _note(
                session,
                job_id,
                attempt + 1,
                "WARNING",
                f"attempt {attempt}'s holder {holder} is gone or stopped heartbeating; queued again "
                f"as attempt {attempt + 1}",
            )
    return requeued


def unsent_jobs(session: Session, *, older_than: float) -> list[tuple[str, str]]:
    """(id, kind) of the queued jobs whose message was last sent more than `older_than` seconds
    ago: if it is no longer on the queue, it was lost."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    sent = func.coalesce(Job.enqueued_at, Job.created_at)
    rows = session.execute(
        select(Job.id, Job.kind).where(Job.state == "queued", sent <= cutoff).order_by(Job.created_at)
    )
    return [(job_id, kind) for job_id, kind in rows]


def mark_sent(session: Session, job_id: str, *, older_than: float) -> bool:
    """Take the re-send of queued job `job_id` (its message last sent more than `older_than`
    seconds ago): True for the one caller that is to send it now."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.state == "queued",
            func.coalesce(Job.enqueued_at, Job.created_at) <= cutoff,
        )
        .values(enqueued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# Any fixed number: the key of the PostgreSQL advisory lock that one reaper at a time holds.
REAPER_LOCK = 0x6A6E7472  # "gntr"


def try_reaper_lock(session: Session) -> bool:
    """One reaper at a time: True when this transaction holds the reaper lock (PostgreSQL: an
    advisory lock released at commit; elsewhere always True, and the conditional UPDATEs of
    `requeue_stale` and `mark_sent` keep each job's requeue or re-send to one reaper)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": REAPER_LOCK}))


# --- metrics and artifacts --------------------------------------------------------------------


def record_metrics(
    session: Session,
    job_id: str,
    *,
    step: int,
    values: dict[str, float],
    token: int | None = None,
    holder: str | None = None,
    time: datetime | None = None,
) -> None:
    """Add metric points, measured at `time` (default: now). With `token` (a worker's write), only
    while that attempt holds job `holder` (default `job_id`; an evaluate job records on its train
    job too), LeaseLost if not; and a point replaces the one of the same name at the same step, so
    a retried write or a re-run of the last step never shows a step twice."""
    now = time or utcnow()
    if token is not None:
        _fence(session, holder or job_id, token)
        session.execute(
            delete(Metric)
            .where(Metric.job_id == job_id, Metric.step == step, Metric.name.in_(list(values)))
            .execution_options(synchronize_session=False)
        )
    if values:  # one INSERT of plain rows (no objects for the session to track and flush)
        session.execute(
            insert(Metric),
            [
                {"job_id": job_id, "name": name, "step": step, "value": float(value), "time": now}
                for name, value in values.items()
            ],
        )


def clear_metrics_after(session: Session, job_id: str, *, step: int, token: int) -> int:
    """A resumed attempt (token) drops the points a dead attempt recorded past the checkpoint it
    resumes from (`step`; -1 when it starts over): it records those steps again. Returns how many."""
    _fence(session, job_id, token)
    result = session.execute(
        delete(Metric)
        .where(Metric.job_id == job_id, Metric.step > step)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def latest_metrics(session: Session, job_id: str) -> dict[str, float]:
    """name -> the value at its highest step (ties: the newest row)."""
    rows = session.execute(
        select(Metric.name, Metric.value).where(Metric.job_id == job_id).order_by(Metric.step, Metric.id)
    )
    return {name: value for name, value in rows}


def metric_history(session: Session, job_id: str) -> list[Metric]:
    return list(
        session.scalars(select(Metric).where(Metric.job_id == job_id).order_by(Metric.step, Metric.id))
    )


def add_artifact(
    session: Session, job_id: str, *, key: str, kind: str, size: int, token: int | None = None
) -> None:
    """Record an object the job wrote. With `token`, only while that attempt holds the job."""
    if token is not None:
        _fence(session, job_id, token)
    existing = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.key == key))
    if existing is not None:
        existing.bytes, existing.kind, existing.created_at = size, kind, utcnow()
    else:
        session.add(Artifact(job_id=job_id, key=key, kind=kind, bytes=size, created_at=utcnow()))


def add_artifacts(
    session: Session, job_id: str, rows: Sequence[tuple[str, str, int]], *, token: int | None = None
) -> None:
    """Record many objects the job wrote, `(key, kind, size)` each, in one statement (a bulk sample
    job's batch). With `token`, only while that attempt holds the job. A key recorded before (an
    earlier attempt's) is recorded again."""
    if token is not None:
        _fence(session, job_id, token)
    if not rows:
        return
    now = utcnow()
    values = [
        {"job_id": job_id, "key": key, "kind": kind, "bytes": size, "created_at": now}
        for key, kind, size in rows
    ]
    # One statement: an upsert on (job_id, key) in both dialects the store runs on.
    upsert = (postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(
        Artifact
    )
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["job_id", "key"],
            set_={
                "kind": upsert.excluded.kind,
                "bytes": upsert.excluded.bytes,
                "created_at": upsert.excluded.created_at,
            },
        ),
        values,
    )


def list_artifacts(session: Session, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.key)))


def count_jobs(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Job)) or 0)


# --- holders that are gone, and ending their jobs (the CLI's embedded mode and `gantry cancel`) -----


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    # Field 22 (starttime, in clock ticks after boot) counts from after the command's closing ")".
    ticks = int(stat.rpartition(")")[2].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def holder_is_gone(job: Job, *, lease_seconds: int, now: datetime | None = None) -> bool:
    """Whether the process that holds running job `job` (its `worker`, `host:pid`) is certainly gone.

    On this host the pid tells: no such process, or one that started after the job's last heartbeat
    (the pid was reused), is gone; where the start time cannot be read, a heartbeat older than the
    lease is. On another host only the lease tells."""
    now = now or utcnow()
    heartbeat = aware(job.heartbeat_at) or aware(job.started_at) or now
    expired = (now - heartbeat).total_seconds() > lease_seconds
    host, _, pid = (job.worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return expired
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = _process_start_time(int(pid))
    if started is None:
        return expired
    return started > heartbeat.timestamp() + 1  # clock ticks round the start time


def running_on_host(session: Session, host: str) -> list[Job]:
    """Running jobs held by a process on `host`."""
    return list(session.scalars(select(Job).where(Job.state == "running", Job.worker.like(f"{host}:%"))))


def end_held_job(
    session: Session, job_id: str, *, holder: str | None, attempt: int, state: str, error: str | None
) -> bool:
    """End job `job_id` as `state` only while it is still `running` under `holder` at `attempt`, so
    that a worker which took it over meanwhile keeps it. True when it was ended."""
    if state not in TERMINAL:
        raise ValueError(state)
    held = Job.worker.is_(None) if holder is None else Job.worker == holder
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", held, Job.attempt == attempt)
        .values(state=state, error=error, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        _note(session, job_id, attempt, "ERROR" if state == "failed" else "WARNING", f"{state}: {error}")
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail_queued_job(session: Session, job_id: str, *, error: str) -> bool:
    """End job `job_id` `failed` if it is still `queued` (its message never reached the queue)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "queued")
        .values(state="failed", error=error, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        attempt = session.scalar(select(Job.attempt).where(Job.id == job_id)) or 1
        _note(session, job_id, attempt, "ERROR", error)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reopen_job(session: Session, job_id: str, *, steps: int | None = None) -> Job:
    """Put a failed or cancelled job back to `queued` with `attempt + 1`; a train job resumes
    from its last checkpoint when it runs again. `steps`: its new total (the caller checks it
    against the spec's bounds and the checkpoint's step)."""
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
    if job is None:
        raise JobNotFound(job_id)
    if job.state not in ("failed", "cancelled"):
        raise InvalidInput("job_id", f"job {job_id} is {job.state}; only failed or cancelled jobs resume")
    job.state, job.attempt, job.worker = "queued", job.attempt + 1, None
    job.error, job.finished_at, job.cancel_requested = None, None, False
    job.deaths = 0  # an operator's resume: a fresh GANTRY_MAX_ATTEMPTS budget
    change = ""
    if steps is not None and steps != job.total_steps:
        change = f", steps {job.total_steps} -> {steps}"
        job.spec = {**job.spec, "steps": steps}
        job.total_steps = steps
    _note(session, job_id, job.attempt, "INFO", f"resumed: queued again as attempt {job.attempt}{change}")
    return job
