"""Load on the HTTP API (issue 29's goals): `gantry serve` on PostgreSQL with 2 uvicorn workers, Redis
as the broker and no gantry worker (nothing runs: submissions only queue), driven by concurrent clients.

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
are what one machine does with both. Goals on a 2-core machine: >= 200 submissions/s, p99 <= 50 ms,
1,000 open streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"kind": "train", "model": "dcgan", "dataset": "digits", "image_size": 16, "steps": 100}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def submissions(
    url: str, headers: dict[str, str], clients: int, seconds: float
) -> tuple[float, list[str]]:
    ids: list[str] = []
    errors: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def one() -> None:
            while time.monotonic() < deadline:
                answer = await http.post("/v1/jobs", json=TRAIN)
                if answer.status_code == 201:
                    ids.append(answer.json()["id"])
                else:
                    errors[answer.status_code] = errors.get(answer.status_code, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(clients)))
        took = time.monotonic() - started
    if errors:
        print(f"  submissions refused: {errors}")
    return len(ids) / took, ids


async def get_latency(
    url: str, headers: dict[str, str], job_ids: list[str], clients: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as http:

        async def one(k: int) -> None:
            nonlocal failures
            i = k
            while time.monotonic() < deadline:
                start = time.perf_counter()
                answer = await http.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}")
                latencies.append(time.perf_counter() - start)
                failures += answer.status_code != 200
                i += clients

        await asyncio.gather(*(one(k) for k in range(clients)))
    return latencies, failures


async def hold_streams(
    url: str, headers: dict[str, str], job_ids: list[str], streams: int, hold: float, clients: int
) -> tuple[int, int, list[float]]:
    """Open `streams` event streams, hold them `hold` seconds while measuring GET latency; returns
    (streams that got their first event, streams still open at the end, GET latencies)."""
    opened = 0
    still_open = 0
    ready = asyncio.Event()
    release = asyncio.Event()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:

        async def one(i: int) -> None:
            nonlocal opened, still_open
            try:
                async with http.stream("GET", f"/v1/jobs/{job_ids[i % len(job_ids)]}/events") as answer:
                    if answer.status_code != 200:
                        return
                    lines = answer.aiter_lines()
                    async for line in lines:
                        if line.startswith("data:"):
                            break
                    opened += 1
                    if opened == streams:
                        ready.set()
                    await release.wait()
                    still_open += not answer.is_closed
            except httpx.HTTPError as exc:
                print(f"  stream {i}: {type(exc).__name__}")

        tasks = [asyncio.create_task(one(i)) for i in range(streams)]
        try:
            await asyncio.wait_for(ready.wait(), timeout=120)
        except TimeoutError:
            print(f"  only {opened} of {streams} streams opened within 120 s")
        latencies, _ = await get_latency(url, headers, job_ids, clients, hold)
        release.set()
        await asyncio.gather(*tasks)
    return opened, still_open, latencies


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
        "PYTHONPATH": str(ROOT),
    }
    gantry = [sys.executable, "-m", "gantry.api.cli"]
    subprocess.run([*gantry, "db", "upgrade"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [*gantry, "token", "create", "--owner", "bench"], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    token_value = next(word for word in token if word.startswith("gty_"))
    headers = {"Authorization": f"Bearer {token_value}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(home / "serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "gantry.api.http.app:app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
         "--no-access-log", "--log-level", "warning"],
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
        print(f"gantry API at {url}: {args.workers} uvicorn workers, PostgreSQL {name}, broker {args.redis}")

        rate, ids = asyncio.run(submissions(url, headers, args.submitters, args.seconds))
        print(
            f"submissions: {rate:.0f}/s ({len(ids)} jobs in {args.seconds:.0f} s, {args.submitters} clients)"
        )

        latencies, failures = asyncio.run(get_latency(url, headers, ids, args.clients, args.seconds))
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        print(
            f"GET /v1/jobs/{{id}} at {args.clients} clients: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"{len(latencies) / args.seconds:.0f} req/s, {failures} failed"
        )

        opened = still_open = 0
        hp50 = hp99 = float("nan")
        if args.streams:
            opened, still_open, held = asyncio.run(
                hold_streams(url, headers, ids, args.streams, args.seconds, args.clients)
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
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        import redis

        redis.Redis.from_url(args.redis).delete("gantry.gpu")
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
