"""The chaos scenarios of issue 28, usable by pytest (bounded sizes) and by bench/chaos.py (full).

(a) SIGKILL of a random worker's main or pool process at a random moment, rounds of it, among 2
    workers and train + sample jobs; a killed main is replaced at once or only after more than the
    lease. (b) Redis restarted (no persistence: every message lost), then flushed. (c) PostgreSQL
    restarted. (d) S3 down (connections refused) for 30 s. (e) a worker SIGSTOPped past its lease
    (an autoscaler starts another), then SIGCONTed. (f) SIGTERM of a busy worker (scale-in), not
    replaced; killed if still there after a grace period, as Kubernetes would.

After each, at a deadline, every job is judged from the outside (SQL rows, the write audit, the
objects in S3):
- stranded: not in a final state at the deadline (a planned sample job never submitted counts);
- lost: final but not `succeeded` at its last step, or (train) its manifest or last checkpoint missing;
- duplicated: the audit saw a superseded attempt write the job, or it turned `succeeded` twice, or
  its metric history or metrics.jsonl holds one (name, step) twice;
- time to resume: from the fault (the end of it, for outages) to the job's step moving again, counted
  only while some ready worker was free for it: holding no other job, and not starting another job
  whose message it had taken (from Celery's "received" in its log to that job's claim: the queue
  is first in, first out, and until the claim the row does not show it); bound: one checkpoint
  interval (seconds, from the measured step rate) + the lease + TOLERANCE (the 0.25 s poll, a start).
(a) also checks that a deterministic job run through the kills ends with the same weights as the same
spec run uninterrupted before them, on the same device.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.chaos import audit
from tests.chaos.services import GANTRY, HOOK, REPO, Services, Worker

TERMINAL = ("succeeded", "failed", "cancelled")
TOLERANCE = 2.0
TINY = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--set", "ngf=8", "--set", "ndf=8"]


@dataclass(frozen=True)
class Size:
    name: str
    train_jobs: int  # (a)
    sample_jobs: int  # (a)
    other_train_jobs: int  # (b)-(f)
    other_sample_jobs: int  # (b)-(f)
    steps: int
    checkpoint_every: int
    kill_rounds: int
    kill_gap: tuple[float, float]  # seconds between kills
    s3_down: float
    settle: float  # after the last fault, how long the jobs get to end
    lease: int = 10
    twin_steps: int = 600  # (a): the deterministic job and its uninterrupted reference
    stop_seconds: int = 5  # GANTRY_STOP_SECONDS, (f)
    grace: float = 12.0  # (f): SIGKILL after this long, as a pod's grace period


BOUNDED = Size("bounded", 3, 1, 2, 1, 1500, 100, 3, (2.0, 5.0), 20.0, 90.0)
FULL = Size("full", 7, 3, 4, 2, 3000, 100, 20, (2.0, 7.0), 30.0, 300.0, twin_steps=1000)


@dataclass
class Fault:
    what: str
    t0: float  # when it began
    t_ref: float  # when resuming may start: its end, for an outage
    jobs: list[str]  # the jobs it hit (running ones)


@dataclass
class Result:
    scenario: str
    faults: int = 0
    jobs: int = 0
    lost: int = 0
    duplicated: int = 0
    stranded: int = 0
    worst_resume: float | None = None  # None: nothing to resume; inf: a job never resumed
    bound: float | None = None
    failures: list[str] = field(default_factory=list)  # a job lost, duplicated, stranded, never resumed
    slow: list[str] = field(default_factory=list)  # resumed, but later than the bound: a figure
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every job correct. How fast they resumed is a figure (`slow`, the table's worst time to
        resume against its bound) that bench/chaos.py judges; the tests assert no timing."""
        return not self.failures

    def report(self) -> str:
        verdict = "FAIL" if self.failures else "SLOW" if self.slow else "PASS"
        lines = [f"[{self.scenario}] {verdict} in {self.seconds:.0f}s"]
        lines += [f"  FAIL: {f}" for f in self.failures] + [f"  SLOW: {f}" for f in self.slow]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class Poller(threading.Thread):
    """Reads every job row 4 times a second (its own connection; an outage only leaves a gap) and
    which worker process groups are ready and which job each holds."""

    def __init__(self, connect: Callable[[], object], live: Callable[[], frozenset[int]]) -> None:
        super().__init__(daemon=True)
        self.connect, self.live = connect, live
        self.latest: dict[str, dict] = {}
        self.history: dict[str, list[tuple[float, str, int, int]]] = {}
        self.ticks: list[tuple[float, frozenset[int], dict[int, str]]] = []
        self.done = threading.Event()
        self.host = socket.gethostname()

    def _group(self, holder: str | None) -> int | None:
        host, _, pid = (holder or "").rpartition(":")
        if host != self.host or not pid.isdigit():
            return None
        try:
            return os.getpgid(int(pid))
        except (ProcessLookupError, PermissionError):
            return None

    def run(self) -> None:
        conn = None
        while not self.done.is_set():
            try:
                if conn is None:
                    conn = self.connect()
                rows = conn.execute(  # type: ignore[attr-defined]
                    "SELECT id, kind, state, step, total_steps, attempt, worker, parent_job_id FROM jobs"
                ).fetchall()
            except Exception:
                with contextlib.suppress(Exception):
                    conn.close()  # type: ignore[union-attr]
                conn = None
                time.sleep(0.25)
                continue
            now = time.monotonic()
            holding: dict[int, str] = {}
            for job_id, kind, state, step, total, attempt, holder, parent in rows:
                row = dict(kind=kind, state=state, step=step, total=total, attempt=attempt, holder=holder)
                row["parent"] = parent
                row["group"] = self._group(holder) if state == "running" else None
                if row["group"] is not None:
                    holding[row["group"]] = job_id
                self.latest[job_id] = row
                hist = self.history.setdefault(job_id, [])
                if not hist or hist[-1][1:] != (state, step, attempt):
                    hist.append((now, state, step, attempt))
            self.ticks.append((now, self.live(), holding))
            time.sleep(0.25)
        with contextlib.suppress(Exception):
            conn.close()  # type: ignore[union-attr]


class Run:
    """One scenario on the session's services: a fresh database (audit installed), a fresh bucket,
    a flushed Redis, its own workers; faults recorded; `finish` judges every job."""

    def __init__(
        self, services: Services, scenario: str, size: Size, rng: random.Random, say: Callable[[str], None]
    ):
        self.services, self.scenario, self.size, self.rng, self.say = services, scenario, size, rng, say
        tag = secrets.token_hex(3)
        self.dir = services.workdir / f"{scenario.split()[0].strip('()')}-{tag}"
        self.dir.mkdir()
        assert services.postgres and services.redis and services.s3
        self.pg, self.redis, self.s3 = services.postgres, services.redis, services.s3
        self.dbname = f"chaos_{tag}"
        self.bucket = f"chaos-{tag}"
        db_url = self.pg.create_database(self.dbname)
        self.s3.client().create_bucket(Bucket=self.bucket)
        self.redis.flush()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")},
            "PYTHONPATH": os.pathsep.join([str(HOOK), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "GANTRY_HOME": str(self.dir / "home"),
            "GANTRY_DATABASE_URL": db_url,
            "GANTRY_BROKER_URL": self.redis.url(0),
            "GANTRY_STORAGE_URL": f"s3://{self.bucket}/runs",
            "GANTRY_S3_ENDPOINT_URL": self.s3.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "GANTRY_LEASE_SECONDS": str(size.lease),
            "GANTRY_STOP_SECONDS": str(size.stop_seconds),
            "GANTRY_REQUEUE_SECONDS": str(2 * size.lease),
            # The kills here are the suite's, not the jobs' own deaths: the attempt limit is not
            # what this suite tests, and 20 random kills may hit one job more than 5 times.
            "GANTRY_MAX_ATTEMPTS": "1000",
        }
        self.cli("db", "upgrade")
        with self.pg.connect(self.dbname) as conn:
            conn.execute(audit.INSTALL)
        self.workers: list[Worker] = []
        self.faults: list[Fault] = []
        self.jobs: list[str] = []  # the scenario's jobs, in submission order
        self.reference: str | None = None  # (a): the uninterrupted twin of jobs[0]
        self.pending_samples: list[tuple[str, int]] = []  # (parent, seed) to submit once it checkpointed
        self.pending_workers: list[float] = []  # when to start a replacement
        self.failures: list[str] = []
        self.slow: list[str] = []
        self.notes: list[str] = []
        self.started = time.monotonic()
        self.mono_offset = time.time() - time.monotonic()  # the workers' logs are on the wall clock
        self.taken: dict[int, list[tuple[float, float, str | None]]] = {}  # pgid -> Worker.messages
        self.poller = Poller(lambda: self.pg.connect(self.dbname), self._live_groups)
        self.poller.start()

    # -- processes ------------------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [*GANTRY, *args], env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout}s")
        if check and result.returncode != 0:
            raise RuntimeError(f"gantry {' '.join(args)} exited {result.returncode}: {result.stderr[-1500:]}")
        return result

    def start_worker(self, via: str = "gantry") -> Worker:
        n = len(self.workers)
        worker = Worker(self.env, self.dir / f"worker{n}.log", name=f"chaos{n}", via=via)
        self.workers.append(worker)
        self.say(f"worker{n} ({via}) started, pid {worker.proc.pid}")
        return worker

    def _live_groups(self) -> frozenset[int]:
        return frozenset(w.pgid for w in self.workers if w.alive and not w.stopped and w.ready_cached())

    def held_job(self, worker: Worker) -> str | None:
        for job_id, row in list(self.poller.latest.items()):
            if row["state"] == "running" and row["group"] == worker.pgid:
                return job_id
        return None

    def running_jobs(self) -> list[str]:
        return [j for j, row in list(self.poller.latest.items()) if row["state"] == "running"]

    def busy(self, min_step: int = 0) -> list[Worker]:
        """Workers (alive, not stopped) holding a job that reached `min_step`."""
        out = []
        for w in self.workers:
            job = self.held_job(w) if w.alive and not w.stopped else None
            if job and self.poller.latest[job]["step"] >= min_step and job != self.reference:
                out.append(w)
        return out

    # -- jobs -----------------------------------------------------------------------------------
    def submit_train(self, seed: int, *, steps: int | None = None) -> str:
        size = self.size
        args = ["train", "dcgan", *TINY, "--steps", str(steps or size.steps), "--seed", str(seed)]
        args += [
            "--checkpoint-every",
            str(size.checkpoint_every),
            "--sample-every",
            str(4 * size.checkpoint_every),
        ]
        job_id = json.loads(self.cli(*args, "--json").stdout)["id"]
        self.say(f"train job {job_id} (seed {seed}) submitted")
        return job_id

    def plan(self, trains: int, samples: int, first_seed: int = 0, *, twin: bool = False) -> list[str]:
        """Submit `trains` train jobs (`twin`: the first is the reference's twin, submitted after two
        others: they take the two workers, so it is still running when the first kill comes, however
        fast a host runs it); a sample job of each of the first `samples` of them is submitted once
        it has a checkpoint."""
        order = [*range(1, min(3, trains)), 0, *range(3, trains)] if twin else list(range(trains))
        submitted = {
            i: self.submit_train(first_seed + i, steps=self.size.twin_steps if twin and i == 0 else None)
            for i in order
        }
        ids = [submitted[i] for i in range(trains)]
        self.jobs += ids
        self.pending_samples += [(ids[i % trains], 100 + i) for i in range(samples)]
        return ids

    def _submit_samples(self) -> None:
        for parent, seed in list(self.pending_samples):
            row = self.poller.latest.get(parent)
            # The manifest is written just after the checkpoint's progress report: one log interval on.
            if row is None or (row["step"] < self.size.checkpoint_every + 10 and row["state"] != "succeeded"):
                continue
            result = self.cli("sample", parent, "--count", "64", "--seed", str(seed), "--json", check=False)
            if result.returncode == 0:
                job_id = json.loads(result.stdout)["id"]
                self.jobs.append(job_id)
                self.pending_samples.remove((parent, seed))
                self.say(f"sample job {job_id} of {parent} submitted")
            else:
                self.say(f"submitting a sample of {parent} failed ({result.returncode}); will retry")

    # -- time -----------------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        for due in list(self.pending_workers):
            if now >= due:
                self.pending_workers.remove(due)
                self.start_worker("gantry")
        self._submit_samples()

    def sleep(self, seconds: float) -> None:
        self.wait_for(lambda: False, seconds)

    def wait_for(self, done: Callable[[], object], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.tick()
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def wait_busy(self, timeout: float = 90) -> list[Worker]:
        """Wait until a worker holds a job past its first checkpoint; those workers."""
        if not self.wait_for(lambda: self.busy(self.size.checkpoint_every + 10), timeout):
            self.notes.append(f"no job passed its first checkpoint within {timeout:.0f}s; faulting anyway")
        return self.busy(self.size.checkpoint_every + 10) or self.busy()

    def fault(self, what: str, t0: float, t_ref: float | None = None, jobs: list[str] | None = None) -> None:
        jobs = [j for j in (self.running_jobs() if jobs is None else jobs) if j and j != self.reference]
        self.faults.append(Fault(what, t0, t0 if t_ref is None else t_ref, jobs))
        self.say(f"FAULT {what} (jobs hit: {', '.join(jobs) or 'none'})")

    # -- judging --------------------------------------------------------------------------------
    def _first_read(self, job: str, fault: Fault) -> tuple[float, tuple[float, str, int, int] | None]:
        """The time of the first read after the fault's t_ref, and the job's row as that read saw it
        (None before its first). An outage of the store leaves a gap in the reads: what that read
        shows may have been reached before the fault."""
        first = next((tk[0] for tk in self.poller.ticks if tk[0] >= fault.t_ref), fault.t_ref)
        before = [h for h in self.poller.history.get(job, []) if h[0] <= first]
        return first, before[-1] if before else None

    def _ended_by(self, job: str, fault: Fault) -> str | None:
        """The job's state at the first read after the fault when that is a final one, else None.
        A fault's jobs are those the poller's last read showed running on its target, a read up to a
        poll old: a job that ended in between was not hit (whether it ended right is checked for
        every job, above)."""
        _, seen = self._first_read(job, fault)
        return seen[1] if seen is not None and seen[1] in TERMINAL else None

    def _resume(self, job: str, fault: Fault) -> tuple[float, float] | None:
        """(seconds, seconds with a ready worker free for it) from the fault's t_ref to the job's
        step moving again (or its succeeding); None when it never did."""
        # The baseline is the step seen by the first read after t_ref.
        first, seen = self._first_read(job, fault)
        step0 = seen[2] if seen is not None else 0
        for t, state, step, _attempt in self.poller.history.get(job, []):
            if t > first and (step != step0 or state in TERMINAL):
                if state in TERMINAL and state != "succeeded":
                    return None
                return t - fault.t_ref, self._free_time(job, fault.t_ref, t)
        return None

    def _free_time(self, job: str, start: float, end: float) -> float:
        ticks = [tk for tk in self.poller.ticks if start <= tk[0] <= end]
        marks = [start, *(tk[0] for tk in ticks), end]
        free = 0.0
        for i in range(len(marks) - 1):
            tick = ticks[i - 1] if i > 0 else None
            if tick is None:
                # Before the first tick: as the last one before `start` saw it (gaps count as free).
                earlier = [tk for tk in self.poller.ticks if tk[0] < start]
                tick = earlier[-1] if earlier else None
            if tick is None or any(self._free_for(job, g, tick) for g in tick[1]):
                free += marks[i + 1] - marks[i]
        return free

    def _free_for(self, job: str, group: int, tick: tuple[float, frozenset[int], dict[int, str]]) -> bool:
        """Whether worker `group` was free for `job` at `tick`: it held no other job's row and was not
        starting another job whose message it had taken (a message it never named counts as free)."""
        held = tick[2].get(group)
        if held is not None:
            return held == job
        return not any(
            start <= tick[0] < until and other not in (None, job)
            for start, until, other in self.taken.get(group, [])
        )

    def _checkpoint_seconds(self) -> float:
        rates = []
        for hist in self.poller.history.values():
            for (t1, s1, p1, a1), (t2, s2, p2, a2) in itertools.pairwise(hist):
                if s1 == s2 == "running" and a1 == a2 and p2 > p1 and t2 - t1 < 5 and p1 >= 10:
                    rates.append((p2 - p1) / (t2 - t1))
        if not rates:
            return float("nan")
        return self.size.checkpoint_every / statistics.median(rates)

    def _object(self, key: str) -> bytes | None:
        try:
            return self.s3.client().get_object(Bucket=self.bucket, Key=f"runs/{key}")["Body"].read()
        except Exception:
            return None

    def _final_weights(self, job: str) -> dict | None:
        import torch

        manifest = self._object(f"jobs/{job}/checkpoints/latest.json")
        data = self._object(json.loads(manifest)["key"]) if manifest else None
        if data is None:
            return None
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return {"G": state["G"], "D": state["D"], "step": state["step"]}

    def reference_run(self) -> None:
        """(a): the deterministic job's spec, run uninterrupted first: its final weights are the truth."""
        self.reference = self.submit_train(0, steps=self.size.twin_steps)
        if not self.wait_for(
            lambda: self.poller.latest.get(self.reference, {}).get("state") in TERMINAL, 120
        ):
            self.failures.append(f"the uninterrupted reference run {self.reference} did not end within 120s")
        elif (state := self.poller.latest[self.reference]["state"]) != "succeeded":
            self.failures.append(f"the uninterrupted reference run {self.reference} ended {state}")

    def finish(self) -> Result:
        size = self.size
        self.say(f"faults done; the jobs get {size.settle:.0f}s to end")
        while self.pending_workers:  # replacements still due are started now
            self.pending_workers.pop()
            self.start_worker("gantry")
        self.wait_for(
            lambda: (
                not self.pending_samples
                and all(self.poller.latest.get(j, {}).get("state") in TERMINAL for j in self.jobs)
            ),
            size.settle,
        )
        with self.pg.connect(self.dbname) as conn:
            rows = {
                r[0]: r
                for r in conn.execute(
                    "SELECT id, kind, state, step, total_steps, attempt, error FROM jobs"
                ).fetchall()
            }
        for w in self.workers:
            w.destroy()
        self.poller.done.set()
        self.poller.join(5)
        result = Result(
            self.scenario, faults=len(self.faults), jobs=len(self.jobs) + len(self.pending_samples)
        )
        with self.pg.connect(self.dbname) as conn:
            audits = audit.analyse(conn)
            dup_points = audit.duplicate_metric_points(conn)
        # Every row counts, not only the ones the harness knows: a submit that failed half-way leaves one.
        unknown = [j for j in rows if j not in self.jobs and j != self.reference]
        for j in unknown:
            self.notes.append(f"job {j} is in the store but its submit did not report it")
        result.jobs += len(unknown)
        for parent, _seed in self.pending_samples:
            result.stranded += 1
            self.failures.append(
                f"a sample job of {parent} was never submitted (its parent never checkpointed)"
            )
        for job in self.jobs + unknown:
            _id, kind, state, step, total, attempt, error = rows[job]
            where = f"{kind} job {job} ({state} at {step}/{total}, attempt {attempt})"
            if state not in TERMINAL:
                result.stranded += 1
                self.failures.append(f"stranded: {where}")
            else:
                trouble = []
                if state != "succeeded":
                    trouble.append(
                        (error or "").strip().splitlines()[0][:200] if error else "no error recorded"
                    )
                if step != total:
                    trouble.append("not at its last step")
                if kind == "train":
                    manifest = self._object(f"jobs/{job}/checkpoints/latest.json")
                    if manifest is None:
                        trouble.append("no manifest")
                    else:
                        m = json.loads(manifest)
                        if m["step"] != total:
                            trouble.append(f"manifest at step {m['step']}")
                        if self._object(m["key"]) is None:
                            trouble.append(f"manifest names a missing {m['key']}")
                if trouble:
                    result.lost += 1
                    self.failures.append(f"lost: {where}: {'; '.join(trouble)}")
            dup = []
            job_audit = audits.get(job, audit.JobAudit())
            if job_audit.stale_writes:
                dup.append(
                    f"{len(job_audit.stale_writes)} writes by a superseded attempt, first: {job_audit.stale_writes[0]}"
                )
            if job_audit.succeeded > 1:
                dup.append(f"turned succeeded {job_audit.succeeded} times")
            if dup_points.get(job):
                dup.append(f"{dup_points[job]} metric points recorded twice in the store")
            jsonl = self._object(f"jobs/{job}/metrics.jsonl") if kind == "train" else None
            if jsonl:
                lines = [json.loads(line) for line in jsonl.decode().splitlines() if line.strip()]
                points = [(p["name"], p["step"]) for p in lines]
                if len(points) != len(set(points)):
                    dup.append(f"metrics.jsonl holds {len(points) - len(set(points))} points twice")
            if dup:
                result.duplicated += 1
                self.failures.append(f"duplicated: {where}: {'; '.join(dup)}")
        # Time to resume.
        self.taken = {w.pgid: w.messages(self.mono_offset) for w in self.workers}
        ckpt_seconds = self._checkpoint_seconds()
        result.bound = ckpt_seconds + size.lease + TOLERANCE
        worst: float | None = None
        for fault in self.faults:
            for job in fault.jobs:
                if (ended := self._ended_by(job, fault)) is not None:
                    self.notes.append(
                        f"'{fault.what}': job {job} was already {ended} at the first read after it "
                        "(it ended between two reads): no resume to time"
                    )
                    continue
                measured = self._resume(job, fault)
                if measured is None:
                    worst = float("inf")
                    self.failures.append(f"resume: job {job} never moved again after '{fault.what}'")
                    continue
                raw, free = measured
                worst = free if worst is None else max(worst, free)
                line = f"'{fault.what}': job {job} moved again {raw:.1f}s after, {free:.1f}s of it with a free worker"
                if free > result.bound:
                    self.slow.append(f"resume too slow: {line} (bound {result.bound:.1f}s)")
                else:
                    self.notes.append(line)
        result.worst_resume = worst
        self.notes.append(
            f"checkpoint interval {ckpt_seconds:.1f}s (measured), lease {size.lease}s: bound {result.bound:.1f}s"
        )
        if self.reference is not None and self.jobs:
            twin = self.jobs[0]
            ref, got = self._final_weights(self.reference), self._final_weights(twin)
            claims = audits.get(twin, audit.JobAudit()).claims
            if ref is None or got is None:
                self.failures.append(
                    f"weights: no final checkpoint for {'the reference' if ref is None else twin}"
                )
            elif ref["step"] != got["step"] or any(
                not ref[net][k].equal(got[net][k]) for net in ("G", "D") for k in ref[net]
            ):
                self.failures.append(
                    f"weights: job {twin} ({claims} attempts) ended with weights unlike its uninterrupted twin "
                    f"{self.reference} (steps {got['step']} vs {ref['step']})"
                )
            else:
                self.notes.append(f"weights: job {twin} ({claims} attempts) equals its uninterrupted twin")
            if claims < 2:
                self.notes.append(f"weights: job {twin} was never interrupted, so the check proves little")
        self._write_timeline()
        result.failures, result.slow, result.notes = self.failures, self.slow, self.notes
        result.seconds = time.monotonic() - self.started
        return result

    def _write_timeline(self) -> None:
        """timeline.json beside the workers' logs (kept with CHAOS_KEEP=1), for a post-mortem of a
        time to resume: every read of the poller, the faults, the workers and the messages they took."""
        data = {
            "mono_offset": self.mono_offset,
            "started": self.started,
            "ticks": [
                (t, sorted(live), {str(g): j for g, j in held.items()}) for t, live, held in self.poller.ticks
            ],
            "history": self.poller.history,
            "faults": [(f.what, f.t0, f.t_ref, f.jobs) for f in self.faults],
            "workers": [(w.name, w.pgid, w.started, self.taken.get(w.pgid, [])) for w in self.workers],
        }
        (self.dir / "timeline.json").write_text(json.dumps(data))

    def close(self) -> None:
        for w in self.workers:
            w.destroy()
        self.poller.done.set()


# --- the scenarios -------------------------------------------------------------------------------


def kill_workers(run: Run) -> None:
    """(a) SIGKILL of a random worker's main or pool process, round after round."""
    size, rng = run.size, run.rng
    run.start_worker("gantry")
    run.start_worker("celery")
    run.reference_run()
    # Two jobs for the two workers and the twin, then the first kill, then the other jobs: a
    # submit takes seconds, and the twin would end while the rest were still being submitted.
    first = min(3, size.train_jobs)
    ids = run.plan(first, size.sample_jobs, twin=True)

    # The first kill hits the deterministic twin past its first checkpoint, so that it resumes from one.
    def twin_past_checkpoint() -> bool:
        return run.poller.latest.get(ids[0], {}).get("step", 0) >= size.checkpoint_every + 10

    if not run.wait_for(twin_past_checkpoint, 90):
        run.notes.append("the deterministic twin did not pass its first checkpoint within 90s")
    for n in range(size.kill_rounds):
        if n:
            run.sleep(rng.uniform(*size.kill_gap))
        if not run.wait_for(
            lambda: [w for w in run.workers if w.alive and w.ready_cached()], 3 * size.lease + 30
        ):
            run.failures.append(f"round {n + 1}: no worker alive to kill")
            continue
        alive = [w for w in run.workers if w.alive and w.ready_cached()]
        busy = [w for w in alive if run.held_job(w)]
        holding_twin = [w for w in busy if run.held_job(w) == ids[0]]
        if n == 0 and holding_twin:  # the deterministic job goes through at least one kill
            target = holding_twin[0]
        else:
            target = rng.choice(busy if busy and rng.random() < 0.85 else alive)
        job = run.held_job(target)
        children = target.children()
        part = "pool" if children and rng.random() < 0.5 else "main"
        pid = children[0] if part == "pool" else target.proc.pid
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        what = f"round {n + 1}: SIGKILL {target.name} {part} (pid {pid})"
        if part == "main":
            delay = rng.choice([1.0, 1.5 * size.lease + 2])
            run.pending_workers.append(t0 + delay)
            what += f", replaced after {delay:.0f}s"
        run.fault(what, t0, jobs=[job] if job else [])
        if n == 0 and size.train_jobs > first:
            run.plan(size.train_jobs - first, 0, first_seed=first)


def redis_restart_and_flush(run: Run) -> None:
    """(b) Redis restarted without persistence (every message gone), then flushed."""
    size = run.size
    run.start_worker("gantry")
    run.start_worker("celery")
    run.plan(size.other_train_jobs, size.other_sample_jobs)
    run.wait_busy()
    t0 = time.monotonic()
    run.redis.restart(down=1.0)
    run.fault("Redis restarted (1 s down, no persistence)", t0, time.monotonic())
    # A queued job is what a flush loses: wait for one (a sample submitted behind busy workers).
    run.wait_for(lambda: any(r["state"] == "queued" for r in list(run.poller.latest.values())), 30)
    run.sleep(2)
    t0 = time.monotonic()
    run.redis.flush()
    run.fault("Redis flushed (FLUSHALL)", t0)


def postgres_restart(run: Run) -> None:
    """(c) PostgreSQL restarted mid-run (fast: connections cut; full size also immediate: a crash)."""
    size = run.size
    run.start_worker("gantry")
    run.start_worker("celery")
    run.plan(size.other_train_jobs, size.other_sample_jobs)
    run.wait_busy()
    modes = ["fast"] if size.name == "bounded" else ["fast", "immediate"]
    for n, mode in enumerate(modes):
        if n:
            run.sleep(8)
            run.wait_busy(30)
        t0 = time.monotonic()
        run.pg.restart(mode)
        run.fault(f"PostgreSQL restarted (-m {mode})", t0, time.monotonic())


def s3_down(run: Run) -> None:
    """(d) S3 unreachable (connection refused) for size.s3_down seconds."""
    size = run.size
    run.start_worker("gantry")
    run.start_worker("celery")
    run.plan(size.other_train_jobs, size.other_sample_jobs)
    run.wait_busy()
    t0 = time.monotonic()
    jobs = run.running_jobs()
    run.s3.down()
    run.sleep(size.s3_down)
    run.s3.up()
    run.fault(f"S3 down {size.s3_down:.0f}s (connection refused)", t0, time.monotonic(), jobs)


def sigstop_past_lease(run: Run) -> None:
    """(e) A busy worker SIGSTOPped for twice the lease (an autoscaler starts another after one
    lease), then SIGCONTed."""
    size = run.size
    run.start_worker("gantry")
    run.start_worker("celery")
    run.plan(size.other_train_jobs, size.other_sample_jobs)
    busy = run.wait_busy()
    if not busy:
        run.failures.append("no busy worker to stop")
        return
    target = busy[0]
    job = run.held_job(target)
    t0 = time.monotonic()
    target.signal_group(signal.SIGSTOP)
    target.stopped = True
    run.fault(f"SIGSTOP {target.name} for {2 * size.lease + 5}s", t0, jobs=[job] if job else [])
    run.sleep(size.lease + 2)
    run.start_worker("gantry")
    run.sleep(max(0.0, t0 + 2 * size.lease + 5 - time.monotonic()))
    target.signal_group(signal.SIGCONT)
    target.stopped = False
    run.say(f"SIGCONT {target.name}")


def sigterm_scale_in(run: Run) -> None:
    """(f) SIGTERM to a busy worker, not replaced; SIGKILLed if still there after the grace period."""
    size = run.size
    run.start_worker("gantry")
    run.start_worker("celery")
    run.plan(size.other_train_jobs, size.other_sample_jobs)
    busy = run.wait_busy()
    if not busy:
        run.failures.append("no busy worker to terminate")
        return
    target = busy[0]
    job = run.held_job(target)
    t0 = time.monotonic()
    target.proc.send_signal(signal.SIGTERM)
    run.fault(f"SIGTERM {target.name} (scale-in)", t0, jobs=[job] if job else [])
    if run.wait_for(lambda: not target.alive, size.grace):
        run.notes.append(f"{target.name} exited {time.monotonic() - t0:.1f}s after SIGTERM")
        if time.monotonic() - t0 > size.stop_seconds + TOLERANCE:
            run.failures.append(
                f"SIGTERM: {target.name} took {time.monotonic() - t0:.1f}s to exit "
                f"(GANTRY_STOP_SECONDS={size.stop_seconds})"
            )
    else:
        target.destroy()
        # What the pod's end does to the job is a fault of its own: resuming is measured from it too.
        run.fault(
            f"SIGKILL {target.name} at the end of its {size.grace:.0f}s grace period",
            time.monotonic(),
            jobs=[job] if job else [],
        )
        run.failures.append(
            f"SIGTERM: {target.name} still running {size.grace:.0f}s after SIGTERM "
            f"(GANTRY_STOP_SECONDS={size.stop_seconds}); SIGKILLed as at the end of a grace period"
        )


SCENARIOS: dict[str, tuple[str, Callable[[Run], None]]] = {
    "a": ("(a) SIGKILL workers", kill_workers),
    "b": ("(b) Redis restart+flush", redis_restart_and_flush),
    "c": ("(c) PostgreSQL restart", postgres_restart),
    "d": ("(d) S3 down", s3_down),
    "e": ("(e) SIGSTOP past lease", sigstop_past_lease),
    "f": ("(f) SIGTERM scale-in", sigterm_scale_in),
}


def run_scenario(
    services: Services,
    key: str,
    size: Size,
    *,
    seed: int | None = None,
    say: Callable[[str], None] | None = None,
) -> Result:
    """Run scenario `key` ("a".."f") at `size` on `services`; every process it started is ended."""
    title, body = SCENARIOS[key]
    seed = secrets.randbelow(2**31) if seed is None else seed
    started = time.monotonic()

    def log(message: str) -> None:
        if say is not None:
            say(f"{time.monotonic() - started:6.1f}s {title}: {message}")

    run = Run(services, title, size, random.Random(seed), log)
    try:
        run.notes.append(f"random seed {seed} (CHAOS_SEED={seed} repeats the choices); logs in {run.dir}")
        try:
            body(run)
        except Exception as exc:  # the harness's own trouble, reported, then the jobs are judged
            run.failures.append(f"scenario raised {type(exc).__name__}: {exc}")
        return run.finish()
    finally:
        run.close()


def table(results: list[Result]) -> str:
    def secs(value: float | None) -> str:
        if value is None:
            return "-"
        return "never" if value == float("inf") else f"{value:.1f}"

    lines = [
        "| scenario | faults injected | jobs | lost | duplicated | stranded | worst time to resume (s) | bound (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.faults} | {r.jobs} | {r.lost} | {r.duplicated} | {r.stranded} "
            f"| {secs(r.worst_resume)} | {secs(r.bound)} |"
        )
    return "\n".join(lines)
