"""Metering ledger speed: reserve + settle throughput and per-operation latency (p50/p99).

For each back end (SQLite in a temporary file; PostgreSQL in a temporary database on 127.0.0.1:5432 when
reachable) and each concurrency C, C asyncio workers each loop ``reserve -> settle`` until ``--requests``
requests are done. Prints requests/s, the latency of reserve and of settle, the process CPU time per
request (whole process: event loop + writer thread, including the leased mode's charges committed behind),
the part of it spent on the event-loop thread (which includes this harness's own task and timer overhead) and
the mean operations per database batch. ``--mode`` picks the strict ledger (a commit per reserve and per
settle), the leased one (:mod:`sovcloud.metering.lease`: in memory against leases, a journal line per step, the
database written behind) or both.
``--rate`` adds open-loop runs (arrivals at a fixed rate, as a gateway sees them): the latency a request
waits for the ledger at that load rather than at saturation.

    python3 benchmarks/ledger_speed.py                     # both back ends, concurrency 1, 64, 256
    python3 benchmarks/ledger_speed.py --backend sqlite --requests 20000 --uvloop
    python3 benchmarks/ledger_speed.py --rate 2000 --concurrency   # open loop only: 2,000 arrivals per second
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from sovcloud.metering.lease import LeasedLedger
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.tenants import ModelPrice, Tenant

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(url: str, concurrency: int, requests: int, tenants: int, rate: float, mode: str,
               journal: Path) -> dict[str, float]:
    db = Ledger.open(url, instance_id="bench")
    ledger: Ledger | LeasedLedger = db if mode == "strict" else LeasedLedger.open(url, "bench", journal)
    if isinstance(ledger, LeasedLedger):
        db = ledger.ledger
    people = [Tenant(f"t{i}", f"T{i}", "de", prices={"*": ModelPrice(0.5, 1.5)}) for i in range(tenants)]
    for t in people:
        db.grant(t.id, 10**15, None)
        db.credit(t.id, 1e6)
    await ledger.start()
    reserve_ms: list[float] = []
    settle_ms: list[float] = []
    left = requests

    async def worker(k: int) -> None:
        nonlocal left
        tenant = people[k % len(people)]
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            res = await ledger.reserve(tenant, "r", "m", 200, 300)
            t1 = time.perf_counter()
            await ledger.settle(res, 200, 120)
            t2 = time.perf_counter()
            reserve_ms.append((t1 - t0) * 1e3)
            settle_ms.append((t2 - t1) * 1e3)

    async def one(k: int) -> None:
        t0 = time.perf_counter()
        res = await ledger.reserve(people[k % len(people)], "r", "m", 200, 300)
        t1 = time.perf_counter()
        await ledger.settle(res, 200, 120)
        reserve_ms.append((t1 - t0) * 1e3)
        settle_ms.append((time.perf_counter() - t1) * 1e3)

    cpu0, loop0, wall0, batches0 = time.process_time(), time.thread_time(), time.perf_counter(), db.stats.batches
    if rate:  # open loop: arrivals every 1/rate s, however many are in flight
        tasks = []
        for k in range(requests):
            delay = wall0 + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k)))
        await asyncio.gather(*tasks)
    else:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    wall, loop_cpu = time.perf_counter() - wall0, time.thread_time() - loop0
    await ledger.close()  # leased: the charges written behind are committed here (counted in the CPU below)
    cpu, batches = time.process_time() - cpu0, db.stats.batches - batches0
    audit = ledger.audit()
    if not audit.ok:
        raise SystemExit(f"audit failed: {audit.problems[:3]}")
    n = len(reserve_ms)
    return {"rps": n / wall, "res_p50": statistics.median(reserve_ms), "res_p99": _pct(reserve_ms, 0.99),
            "set_p50": statistics.median(settle_ms), "set_p99": _pct(settle_ms, 0.99),
            "cpu_us": cpu / n * 1e6, "loop_us": loop_cpu / n * 1e6,
            "batch": (2 if mode == "strict" else 1) * n / max(1, batches)}


def _pg_database() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            name = f"sov_bench_{uuid.uuid4().hex[:8]}"
            conn.execute(f"CREATE DATABASE {name}")
            return name
    except psycopg.OperationalError:
        return None


def _pg_drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 64, 256])
    ap.add_argument("--tenants", type=int, default=1, help="tenants the workers spread over (1: one hot account)")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop (as the gateway does)")
    ap.add_argument("--mode", choices=["strict", "leased", "both"], default="both",
                    help="strict: a commit per reserve and settle; leased: in memory + journal, charges behind")
    ap.add_argument("--rate", type=float, nargs="+", default=[],
                    help="also run open loop at these arrival rates (req/s), e.g. 500 2000")
    args = ap.parse_args()
    runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    print(f"{'mode':<7} {'backend':<10} {'conc':>8} {'req/s':>8} {'reserve p50/p99 ms':>19} {'settle p50/p99 ms':>18} "
          f"{'CPU us/req':>10} {'loop us/req':>11} {'ops/batch':>9}")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    modes = ["strict", "leased"] if args.mode == "both" else [args.mode]
    for mode, backend in ((m, b) for m in modes for b in backends):
        runs = [(c, 0.0) for c in args.concurrency] + [(0, r) for r in args.rate]
        for conc, rate in runs:
            pg = None
            with tempfile.TemporaryDirectory() as tmp:
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
                else:
                    pg = _pg_database()
                    if pg is None:
                        print("postgresql: not reachable on 127.0.0.1:5432; skipped")
                        break
                    url = f"postgresql://postgres@127.0.0.1:5432/{pg}"
                try:
                    r = runner(_run(url, conc, args.requests, args.tenants, rate, mode, Path(tmp) / "journal"))
                finally:
                    if pg is not None:
                        _pg_drop(pg)
            label = f"{conc}" if not rate else f"@{rate:.0f}/s"
            print(f"{mode:<7} {backend:<10} {label:>8} {r['rps']:>8.0f} {r['res_p50']:>9.3f}/{r['res_p99']:<9.3f} "
                  f"{r['set_p50']:>8.3f}/{r['set_p99']:<9.3f} {r['cpu_us']:>10.0f} {r['loop_us']:>11.0f} "
                  f"{r['batch']:>9.1f}")


if __name__ == "__main__":
    main()
