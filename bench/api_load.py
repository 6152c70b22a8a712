"""Load on the HTTP API (issue 29's goals): `gantry serve --no-worker --workers 2 --no-access-log` on
PostgreSQL with Redis as the broker and no gantry worker (nothing runs: submissions only queue), driven
by concurrent clients.

    python bench/api_load.py                      # this machine's PostgreSQL and Redis
    python bench/api_load.py --seconds 20 --streams 1000 --clients 50

Measures, one after the other:
1. submissions per second: `--submitters` clients POST small train jobs for `--seconds`;
2. `GET /v1/jobs/{id}` latency, p50 and p99, at `--clients` concurrent clients;
3. open event streams: `--streams` clients hold `GET /v1/jobs/{id}/events` on queued jobs at once
   (each must get its first event and stay open), with the GET latency measured again meanwhile.

It creates its own database (dropped at the end) on the PostgreSQL server and uses its own Redis
database number; the machine's other databases and keys are left alone. The load generator runs
on the same machine as the server, so on a small host it takes a share of the cores: the figures
are what one machine does with both. Its clients are plain keep-alive HTTP/1.1 connections on
asyncio (`Conn`), not httpx, whose own CPU per request (a few ms, as much as the server's) would
leave the server only part of a 2-core machine. Goals on a 2-core machine: >= 200 submissions/s,
p99 <= 50 ms, 1,000 open streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
TRAIN = {"kind": "train", "model": "dcgan", "dataset": "digits", "image_size": 16, "steps": 100}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Conn:
    """One keep-alive HTTP/1.1 connection to the API (answers with a Content-Length only, as the
    API's JSON answers are)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.reader.at_eof():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self.reader, self.writer

    async def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[bytes, bytes]]:
        """Send a request; returns the answer's status and headers (its body is left to read)."""
        reader, writer = await self._open()
        head = f"{method} {path} HTTP/1.1\r\n{self.head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            status, headers = await self.send(method, path, body)
            assert self.reader is not None
            data = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            self.close()
            return 0, b""  # a refused or dropped connection: counted as a failure, opened again
        if headers.get(b"connection") == b"close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def submissions(port: int, token: str, clients: int, seconds: float) -> tuple[float, list[str]]:
    ids: list[str] = []
    errors: dict[int, int] = {}
    body = json.dumps(TRAIN).encode()
    deadline = time.monotonic() + seconds

    async def one() -> None:
        conn = Conn(port, token)
        while time.monotonic() < deadline:
            status, data = await conn.request("POST", "/v1/jobs", body)
            if status == 201:
                ids.append(json.loads(data)["id"])
            else:
                errors[status] = errors.get(status, 0) + 1
        conn.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(clients)))
    took = time.monotonic() - started
    if errors:
        print(f"  submissions refused: {errors} (0: connection refused or dropped)")
    return len(ids) / took, ids


async def get_latency(
    port: int, token: str, job_ids: list[str], clients: int, seconds: float
) -> tuple[list[float], int]:
    """`clients` connections, each sending its next GET as soon as the last is answered."""
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def one(k: int) -> None:
        nonlocal failures
        conn = Conn(port, token)
        i = k
        while time.monotonic() < deadline:
            start = time.perf_counter()
            status, _ = await conn.request("GET", f"/v1/jobs/{job_ids[i % len(job_ids)]}")
            latencies.append(time.perf_counter() - start)
            failures += status != 200
            i += clients
        conn.close()

    await asyncio.gather(*(one(k) for k in range(clients)))
    return latencies, failures


async def hold_streams(
    port: int, token: str, job_ids: list[str], streams: int, hold: float, clients: int
) -> tuple[int, int, list[float]]:
    """Open `streams` event streams, hold them `hold` seconds while measuring GET latency; returns
    (streams that got their first event, streams still open at the end, GET latencies)."""
    opened = 0
    still_open = 0
    ready = asyncio.Event()
    release = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal opened, still_open
        conn = Conn(port, token)
        try:
            status, _ = await conn.send("GET", f"/v1/jobs/{job_ids[i % len(job_ids)]}/events")
            assert conn.reader is not None
            if status != 200:
                return
            while not (line := await conn.reader.readline()).startswith(b"data:"):
                if not line:
                    return
            opened += 1
            if opened == streams:
                ready.set()
            await release.wait()
            try:  # open: nothing to read yet, or a keep-alive or event; closed: end of file
                alive = await asyncio.wait_for(conn.reader.read(100), 0.2) != b""
            except TimeoutError:
                alive = True
            still_open += alive  # after the await: `still_open += await ...` would add to a stale count
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
            print(f"  stream {i}: {type(exc).__name__}")
        finally:
            conn.close()

    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    try:
        await asyncio.wait_for(ready.wait(), timeout=120)
    except TimeoutError:
        print(f"  only {opened} of {streams} streams opened within 120 s")
    latencies, _ = await get_latency(port, token, job_ids, clients, hold)
    release.set()
    await asyncio.gather(*tasks)
    return opened, still_open, latencies


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """On uvloop when it is installed (it comes with uvicorn[standard]): less CPU for the clients."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pg", default=os.environ.get("GANTRY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--submitters", type=int, default=16)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    name = f"gantry_bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    home = Path(tempfile.mkdtemp(prefix="gantry-api-load-"))
    env = os.environ | {
        "GANTRY_HOME": str(home),
        "GANTRY_DATABASE_URL": database,
        "GANTRY_BROKER_URL": args.redis,
        "GANTRY_API_RATE": "1000000",
        "GANTRY_API_BURST": "1000000",
        "GANTRY_API_MAX_ACTIVE_JOBS": "100000000",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    gantry = [sys.executable, "-m", "gantry.api.cli"]
    subprocess.run([*gantry, "db", "upgrade"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [*gantry, "token", "create", "--owner", "bench"], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    token_value = next(word for word in token if word.startswith("gty_"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(home / "serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [*gantry, "serve", "--no-worker", "--no-access-log", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(args.workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            print((home / "serve.log").read_text()[-3000:])
            return 1
        print(
            f"gantry serve at {url}: {args.workers} uvicorn workers, PostgreSQL {name}, broker {args.redis}; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )

        rate, ids = run(submissions(port, token_value, args.submitters, args.seconds))
        print(
            f"submissions: {rate:.0f}/s ({len(ids)} jobs in {args.seconds:.0f} s, {args.submitters} clients)"
        )

        latencies, failures = run(get_latency(port, token_value, ids, args.clients, args.seconds))
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        print(
            f"GET /v1/jobs/{{id}} at {args.clients} clients: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"{len(latencies) / args.seconds:.0f} req/s, {failures} failed"
        )

        opened = still_open = 0
        hp50 = hp99 = float("nan")
        if args.streams:
            opened, still_open, held = run(
                hold_streams(port, token_value, ids, args.streams, args.seconds, args.clients)
            )
            hp50, hp99 = percentile(held, 0.5) * 1000, percentile(held, 0.99) * 1000
        print(
            f"event streams: {opened} of {args.streams} opened, {still_open} still open after "
            f"{args.seconds:.0f} s; meanwhile GET p50 {hp50:.1f} ms, p99 {hp99:.1f} ms"
        )
        print()
        print("| measure | figure | goal |")
        print("|---|---|---|")
        print(f"| submissions/s ({args.submitters} clients) | {rate:.0f} | >= 200 |")
        print(
            f"| GET /v1/jobs/{{id}} p50 / p99 ({args.clients} clients) | {p50:.1f} / {p99:.1f} ms | p99 <= 50 ms |"
        )
        print(f"| open event streams held {args.seconds:.0f} s | {still_open} of {args.streams} | 1,000 |")
        print(f"| GET p50 / p99 with the streams open | {hp50:.1f} / {hp99:.1f} ms | |")
        ok = rate >= 200 and p99 <= 50 and still_open >= 1000
        return 0 if ok else 1
    finally:
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        server.send_signal(signal.SIGTERM)  # serve stops its uvicorn processes
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        import redis

        redis.Redis.from_url(args.redis).delete("gantry.gpu")
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
