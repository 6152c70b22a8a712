"""The chaos suite at full size (`make chaos`): issue 28's six faults against real worker processes,
a private redis-server, a private PostgreSQL cluster (initdb/pg_ctl on free ports) and moto's S3
server behind a cuttable forwarder. The machine's own servers are left alone.

    python bench/chaos.py                   # all six scenarios, full size (20 kill rounds, 10 jobs)
    python bench/chaos.py --size bounded    # what `make test` runs (tests/chaos)
    python bench/chaos.py --only a,d --seed 7

Prints what happens as it goes, each scenario's verdict with its reasons, then the table for
bench/RESULTS.md: faults injected, jobs, lost, duplicated, stranded, worst time to resume. Exits 1
when any scenario failed or resumed a job later than its bound (one checkpoint interval + the lease
+ 2 s). The scenarios and their definitions: tests/chaos/scenarios.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.chaos

from tests.chaos.scenarios import BOUNDED, FULL, SCENARIOS, run_scenario, table
from tests.chaos.services import Missing, Services


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["full", "bounded"], default="full")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. a,d")
    parser.add_argument(
        "--seed", type=int, default=int(os.environ["CHAOS_SEED"]) if "CHAOS_SEED" in os.environ else None
    )
    args = parser.parse_args()
    size = FULL if args.size == "full" else BOUNDED
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    if unknown := [k for k in keys if k not in SCENARIOS]:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")

    started = time.monotonic()
    try:
        services = Services()
    except Missing as exc:
        print(f"chaos: a private service cannot run here: {exc}", file=sys.stderr)
        return 2
    results = []
    try:
        for key in keys:
            result = run_scenario(services, key, size, seed=args.seed, say=lambda m: print(m, flush=True))
            print(result.report(), flush=True)
            results.append(result)
    finally:
        services.destroy()
    print()
    print(f"Chaos suite, {size.name} size, {time.monotonic() - started:.0f}s:")
    print(table(results))
    return 0 if all(r.ok and not r.slow for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
