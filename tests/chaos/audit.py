"""The write audit, from outside gantry: PostgreSQL triggers on the tables a worker writes for a job
(jobs UPDATE: claim, heartbeat, progress, final state; metrics INSERT; artifacts INSERT/UPDATE, each of
which follows the object it records) log every committed write with the writing process
(`application_name`, `gantry-<pid>` from hook/sitecustomize.py) into `chaos_audit`.

A claim (the row turned `running`, or its attempt or holder changed) names the attempt a process
holds. Any later write for that job by a process whose attempt was superseded (another process
claimed it, or a reaper requeued it) is two attempts writing one job at once: what fencing forbids.
Writes by processes that never claimed the job (the CLI, a reaper) are not attempts' writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

INSTALL = """
CREATE TABLE chaos_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    tbl text NOT NULL,
    op text NOT NULL,
    job_id text,
    app text,
    attempt int,
    old_attempt int,
    holder text,
    old_holder text,
    old_state text,
    new_state text,
    step int,
    finished boolean,
    detail text
);
CREATE FUNCTION chaos_audit_jobs() RETURNS trigger AS $$
BEGIN
    INSERT INTO chaos_audit (tbl, op, job_id, app, attempt, old_attempt, holder, old_holder,
                             old_state, new_state, step, finished)
    VALUES ('jobs', TG_OP, NEW.id, current_setting('application_name'), NEW.attempt, OLD.attempt,
            NEW.worker, OLD.worker, OLD.state, NEW.state, NEW.step,
            NEW.finished_at IS DISTINCT FROM OLD.finished_at);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chaos_audit_jobs AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION chaos_audit_jobs();
CREATE FUNCTION chaos_audit_rows() RETURNS trigger AS $$
BEGIN
    INSERT INTO chaos_audit (tbl, op, job_id, app, step, detail)
    VALUES (TG_TABLE_NAME, TG_OP, NEW.job_id, current_setting('application_name'),
            (to_jsonb(NEW) ->> 'step')::int,
            coalesce(to_jsonb(NEW) ->> 'key', to_jsonb(NEW) ->> 'name'));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chaos_audit_metrics AFTER INSERT ON metrics
    FOR EACH ROW EXECUTE FUNCTION chaos_audit_rows();
CREATE TRIGGER chaos_audit_artifacts AFTER INSERT OR UPDATE ON artifacts
    FOR EACH ROW EXECUTE FUNCTION chaos_audit_rows();
"""


@dataclass
class JobAudit:
    attempts: dict[int, int] = field(default_factory=dict)  # pid -> the attempt it claimed last
    stale_writes: list[str] = field(default_factory=list)  # writes by a superseded attempt
    succeeded: int = 0  # writes that made the job `succeeded` (a final-state write)
    claims: int = 0


def _pid(app: str | None) -> int | None:
    if app and app.startswith("gantry-") and app[7:].isdigit():
        return int(app[7:])
    return None


def analyse(conn) -> dict[str, JobAudit]:  # type: ignore[no-untyped-def]
    """Per job: its claims, the writes made by superseded attempts, its `succeeded` transitions."""
    rows = conn.execute(
        "SELECT id, at, tbl, op, job_id, app, attempt, old_attempt, holder, old_holder, old_state, "
        "new_state, step, finished, detail FROM chaos_audit ORDER BY id"
    ).fetchall()
    audits: dict[str, JobAudit] = defaultdict(JobAudit)
    owner: dict[str, int | None] = {}
    for (
        _id,
        at,
        tbl,
        op,
        job_id,
        app,
        attempt,
        old_attempt,
        holder,
        old_holder,
        old_state,
        new_state,
        step,
        fin,
        detail,
    ) in rows:
        audit, pid = audits[job_id], _pid(app)
        if tbl == "jobs":
            if fin and new_state == "succeeded":
                audit.succeeded += 1
            claimed = new_state == "running" and (
                old_state != "running" or attempt != old_attempt or holder != old_holder
            )
            if claimed:
                audit.claims += 1
                holder_pid = (
                    int(holder.rpartition(":")[2]) if holder and holder.rpartition(":")[2].isdigit() else pid
                )
                owner[job_id] = holder_pid
                if holder_pid is not None:
                    audit.attempts[holder_pid] = attempt
                continue
            if new_state == "queued" and old_state == "running":  # requeued: no attempt holds it
                owner[job_id] = None
                continue
        if pid is None or pid not in audit.attempts:
            continue  # not an attempt's write (CLI, reaper, harness)
        if owner.get(job_id) != pid:
            what = (
                f"{tbl} {op}"
                + (f" {detail}" if detail else "")
                + (f" step {step}" if step is not None else "")
            )
            if tbl == "jobs":
                what += f" (state {old_state}->{new_state})"
            current = f"attempt {attempt}" if tbl == "jobs" else "a newer attempt"
            audit.stale_writes.append(
                f"{at:%H:%M:%S.%f}"[:-3]
                + f" attempt {audit.attempts[pid]} (pid {pid}) wrote {what} while {current} held the job"
            )
    return dict(audits)


def duplicate_metric_points(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """job -> how many (name, step) metric points the store holds more than once."""
    rows = conn.execute(
        "SELECT job_id, count(*) FROM (SELECT job_id, name, step FROM metrics "
        "GROUP BY job_id, name, step HAVING count(*) > 1) d GROUP BY job_id"
    ).fetchall()
    return {job_id: int(n) for job_id, n in rows}
