from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovcloud.errors import InsufficientFunds, LedgerError
from sovcloud.metering.book import Batch, Op, cover
from sovcloud.metering.db import LedgerDB
from sovcloud.metering.ledger import Ledger, Reservation, Settlement, default_ledger_url
from sovcloud.metering.tenants import ModelPrice, Tenant
from tests.support.gateway import PG_ADMIN, pg_database

FREE = Tenant("free", "Free", "de")  # no prices: grants only
PAYING = Tenant("pay", "Paying", "fr", prices={"m1": ModelPrice(1.0, 2.0), "*": ModelPrice(10.0, 20.0)})


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards; FAILS (not skips) when unreachable."""
    with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


async def _started(url: str, **kw: object) -> Ledger:
    ledger = Ledger.open(url, **kw)  # type: ignore[arg-type]
    await ledger.start()
    return ledger


def _ceil_micro(pico: int) -> int:
    return -(-pico // 1_000_000)


# ---- arithmetic -------------------------------------------------------------------------------------

def test_grants_before_credits_and_settle_releases_the_rest(sqlite_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(sqlite_url)
        led.grant("pay", 1000, None)
        led.credit("pay", 1.0)
        await led.start()
        r = await led.reserve(PAYING, "q1", "m1", 300, 1000)
        # grants cover 300 prompt + 700 completion; 300 completion tokens at 2 US$/Mtok = 600 micro-US$
        assert (r.grant_tokens, r.credit_micro, r.credit_usd) == (1000, 600, 0.0006)
        b = led.balance("pay")
        assert (b.grant_tokens, b.reserved_tokens, b.credit_micro, b.reserved_micro) == (0, 1000, 999_400, 600)
        s = await led.settle(r, 300, 500)
        assert (s.grant_tokens, s.credit_micro, s.unbilled_tokens) == (800, 0, 0)
        again = await led.settle(r, 1, 1)  # idempotent: the first settlement
        assert again == s
        await led.release(r)  # no-op once settled
        b = led.balance("pay")
        assert (b.grant_tokens, b.spent_tokens, b.reserved_tokens) == (200, 800, 0)
        assert (b.credit_micro, b.spent_micro, b.reserved_micro, b.pending) == (1_000_000, 0, 0, 0)
        # the grant is gone: the next request is paid from credits at m1's price, then the "*" price
        r2 = await led.reserve(PAYING, "q2", "m1", 1000, 1000)
        assert (r2.grant_tokens, r2.credit_micro) == (200, 800 * 1 + 1000 * 2)
        s2 = await led.settle(r2, 1000, 10)
        assert (s2.grant_tokens, s2.credit_micro) == (200, 800 + 20)
        r3 = await led.reserve(PAYING, "q3", "other-model", 7, 0)
        assert r3.credit_micro == 70
        await led.release(r3)
        await led.close()
        b = led.balance("pay")
        assert (b.spent_tokens, b.spent_micro, b.credit_micro) == (1000, 820, 1_000_000 - 820)
        assert led.audit().ok

    asyncio.run(run())


def test_earliest_expiring_grant_first_and_expired_grants_unused(sqlite_url: str) -> None:
    now = datetime.now(UTC)

    async def run() -> None:
        led = Ledger.open(sqlite_url)
        led.grant("free", 1000, None)  # never expires: used last
        led.grant("free", 100, now + timedelta(days=30))
        led.grant("free", 50, now + timedelta(days=1))  # expires first: used first
        with pytest.raises(ValueError, match="positive"):
            led.grant("free", 0, None)
        await led.start()
        r = await led.reserve(FREE, "q", "m", 100, 100)
        rows = _rows(sqlite_url, "SELECT grant_parts FROM ledger_reservations")
        assert rows == [("3:50,2:100,1:50",)]
        await led.settle(r, 100, 20)  # 120 used: 50 from the first to expire, 70 from the next
        await led.close()
        b = led.balance("free")
        assert (b.grant_tokens, b.spent_tokens) == (1030, 120)
        later = led.balance("free", now + timedelta(days=2))  # the 1-day grant (already empty) has expired
        assert (later.grant_tokens, later.expired_tokens) == (1030, 0)
        much_later = led.balance("free", now + timedelta(days=60))
        assert (much_later.grant_tokens, much_later.expired_tokens) == (1000, 30)
        assert led.audit().ok

    asyncio.run(run())


def test_expired_grant_is_not_spent(sqlite_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(sqlite_url)
        led.grant("free", 500, datetime.now(UTC) + timedelta(seconds=3600))
        await led.start()
        r = await led.reserve(FREE, "q", "m", 10, 10)
        future = time.time() + 7200
        led.clock = lambda: future
        with pytest.raises(InsufficientFunds):
            await led.reserve(FREE, "q2", "m", 1, 1)
        await led.settle(r, 10, 5)  # reserved before expiry: still charged from that grant
        await led.close()
        b = led.balance("free", datetime.fromtimestamp(future, UTC))
        assert (b.spent_tokens, b.grant_tokens, b.expired_tokens) == (15, 0, 485)
        assert led.audit().ok

    asyncio.run(run())


def test_insufficient_funds_messages(sqlite_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(sqlite_url)
        led.grant("free", 100, None)
        led.credit("pay", 0.001)  # 1000 micro-US$
        await led.start()
        with pytest.raises(InsufficientFunds, match=r"no price for model 'm'.*grant tokens"):
            await led.reserve(FREE, "q", "m", 50, 51)
        with pytest.raises(InsufficientFunds, match=r"US\$0.001000.*tenants credit pay USD"):
            await led.reserve(PAYING, "q", "m1", 1, 1000)  # 1 + 2000 micro > 1000
        ok = await led.reserve(PAYING, "q", "m1", 0, 500)  # exactly 1000 micro
        assert ok.credit_micro == 1000
        with pytest.raises(InsufficientFunds):
            await led.reserve(PAYING, "q", "m1", 1, 0)
        await led.release(ok)
        await led.close()
        b = led.balance("pay")
        assert (b.credit_micro, b.spent_micro) == (1000, 0)
        assert led.audit().ok

    asyncio.run(run())


def test_fractional_prices_round_up_to_the_micro_dollar() -> None:
    # 0.15 US$/Mtok = 150,000 pico-US$ per token; 7 tokens = 1.05 micro-US$ -> 2
    assert cover(7, 0, 150_000, 0, 10) == (7, 0, 2)
    assert cover(7, 3, 150_000, 600_000, 10**6) == (7, 3, _ceil_micro(7 * 150_000 + 3 * 600_000))
    assert cover(10, 10, 1_000_000, 2_000_000, 15) == (10, 2, 14)  # budget covers prompt first
    assert cover(10, 10, -1, -1, 10**9) == (0, 0, 0)  # no price: credits cannot pay


def test_usage_above_the_reservation_draws_available_then_is_recorded_unbilled(sqlite_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(sqlite_url)
        led.grant("pay", 120, None)
        led.credit("pay", 0.0001)  # 100 micro
        await led.start()
        r = await led.reserve(PAYING, "q", "m1", 10, 10)  # 20 from the grant
        s = await led.settle(r, 10, 200)  # 210 used: 20 reserved + 100 grant left + 90 at 2 micro (only 50 paid)
        assert (s.grant_tokens, s.credit_micro, s.unbilled_tokens) == (120, 100, 40)
        await led.close()
        b = led.balance("pay")
        assert (b.grant_tokens, b.credit_micro, b.unbilled_tokens, b.spent_micro) == (0, 0, 40, 100)
        assert led.audit().ok

    asyncio.run(run())


def test_release_returns_everything_and_settle_after_release_fails(sqlite_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(sqlite_url)
        led.grant("pay", 100, None)
        led.credit("pay", 1)
        await led.start()
        r = await led.reserve(PAYING, "q", "m1", 50, 500)
        await led.release(r)
        await led.release(r)
        with pytest.raises(LedgerError, match="released"):
            await led.settle(r, 50, 1)
        ghost = Reservation("nope", "pay", "m1", 0, 0.0, 1, 1)
        with pytest.raises(LedgerError, match="not in the ledger"):
            await led.settle(ghost, 1, 1)
        other = await led.reserve(PAYING, "q2", "m1", 1, 1)
        forged = Reservation(other.id, "free", "m1", 0, 0.0, 1, 1)
        results = await asyncio.gather(led.settle(forged, 1, 1), led.settle(other, 1, 1), return_exceptions=True)
        assert isinstance(results[0], LedgerError) and "belongs to tenant pay" in str(results[0])
        assert isinstance(results[1], Settlement) and results[1].grant_tokens == 2  # same batch, unharmed
        await led.close()
        b = led.balance("pay")
        assert (b.grant_tokens, b.credit_micro, b.spent_tokens, b.spent_micro) == (98, 1_000_000, 2, 0)
        assert led.audit().ok

    asyncio.run(run())


def test_cancelled_reserve_is_released(sqlite_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(sqlite_url)
        led.grant("free", 100, None)
        await led.start()
        task = asyncio.create_task(led.reserve(FREE, "q", "m", 10, 10))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0.2)
        await led.close()
        b = led.balance("free")
        assert (b.grant_tokens, b.reserved_tokens, b.pending) == (100, 0, 0)

    asyncio.run(run())


def test_progress_is_recorded_once_per_block(sqlite_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(sqlite_url, progress_block=8)
        led.grant("free", 1000, None)
        await led.start()
        r = await led.reserve(FREE, "q", "m", 10, 20)
        ops = led.stats.ops
        for n in range(1, 9):
            await led.progress(r, n)
        assert led.stats.ops == ops + 1
        assert _rows(sqlite_url, "SELECT progress FROM ledger_reservations") == [(8,)]
        await led.progress(r, 9)
        assert _rows(sqlite_url, "SELECT progress FROM ledger_reservations") == [(16,)]
        await led.progress(r, 19)
        assert _rows(sqlite_url, "SELECT progress FROM ledger_reservations") == [(20,)]  # capped at max_tokens
        await led.settle(r, 10, 19)
        await led.close()
        assert led.audit().ok

    asyncio.run(run())


def test_retried_batch_is_idempotent(sqlite_url: str) -> None:
    """A batch whose commit went through but was retried (ambiguous commit) changes nothing twice."""
    led = Ledger.open(sqlite_url)
    led.grant("free", 1000, None)
    db = LedgerDB.parse(sqlite_url)
    conn = db.connect()
    try:
        reserve = [Op("reserve", "r1", "free", 10, 90, "m", "q")]
        first = Batch(db, conn, reserve).run()
        again = Batch(db, conn, reserve, check_new=True).run()
        assert first == again
        settle = [Op("settle", "r1", "free", 10, 40)]
        s1 = Batch(db, conn, settle).run()
        s2 = Batch(db, conn, settle).run()
        assert s1 == s2 and isinstance(s1[0], Settlement) and s1[0].grant_tokens == 50
    finally:
        conn.close()
    b = led.balance("free")
    assert (b.grant_tokens, b.spent_tokens, b.reserved_tokens) == (950, 50, 0)
    assert led.audit().ok


def test_audit_detects_tampering(sqlite_url: str) -> None:
    async def run() -> None:
        led = await _started(sqlite_url)
        led.grant("free", 1000, None)
        r = await led.reserve(FREE, "q", "m", 10, 10)
        await led.settle(r, 10, 10)
        await led.close()
        assert led.audit().ok and led.audit("free").ok

    asyncio.run(run())
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE ledger_grants SET spent = spent - 5, available = available + 5")
    conn.close()
    audit = Ledger.open(sqlite_url).audit()
    assert not audit.ok and any("differ from the reservations" in p for p in audit.problems)


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


# ---- property: random sequences always balance --------------------------------------------------------

_action = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 300), st.integers(0, 300), st.sampled_from(["m1", "m2"])),
    st.tuples(st.just("settle"), st.integers(0, 50), st.floats(0, 1.3), st.floats(0, 1.3)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("progress"), st.integers(0, 50), st.integers(0, 400)),
    st.tuples(st.just("grant"), st.integers(1, 2000), st.sampled_from([None, -1, 1])),
    st.tuples(st.just("credit"), st.integers(1, 5000)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_action, min_size=1, max_size=25))
def test_random_sequences_always_balance(actions: list[tuple[object, ...]]) -> None:
    tenant = Tenant("p", "P", "de", prices={"m1": ModelPrice(0.15, 0.6), "m2": ModelPrice(3, 1)})

    async def run(url: str) -> None:
        led = Ledger.open(url, progress_block=4)
        led.grant("p", 100, None)
        await led.start()
        live: list[Reservation] = []
        settlements: list[tuple[Reservation, int, int, Settlement]] = []
        for act in actions:
            kind = act[0]
            if kind == "reserve":
                with contextlib.suppress(InsufficientFunds):
                    live.append(await led.reserve(tenant, "q", str(act[3]), int(act[1]), int(act[2])))  # type: ignore[call-overload]
            elif kind in ("settle", "release", "progress") and live:
                r = live[int(act[1]) % len(live)]  # type: ignore[call-overload]
                if kind == "settle":
                    p = int(r.prompt_tokens * float(act[2]))  # type: ignore[arg-type]
                    c = int(r.max_tokens * float(act[3]))  # type: ignore[arg-type]
                    with contextlib.suppress(LedgerError):  # settled after a release
                        settlements.append((r, p, c, await led.settle(r, p, c)))
                elif kind == "release":
                    await led.release(r)
                else:
                    await led.progress(r, int(act[2]))  # type: ignore[call-overload]
            elif kind == "grant":
                when = None if act[2] is None else datetime.now(UTC) + timedelta(days=int(act[2]))  # type: ignore[call-overload]
                if when is None or when > datetime.now(UTC):
                    led.grant("p", int(act[1]), when)  # type: ignore[call-overload]
                else:
                    with pytest.raises(ValueError):
                        led.grant("p", int(act[1]), when)  # type: ignore[call-overload]
            elif kind == "credit":
                led.credit("p", int(act[1]) / 1e6)  # type: ignore[call-overload]
        await led.close()
        audit = led.audit()
        assert audit.ok, audit.problems
        b = led.balance("p")
        assert min(b.grant_tokens, b.reserved_tokens, b.spent_tokens, b.credit_micro, b.reserved_micro,
                   b.spent_micro) >= 0
        assert b.granted_tokens == b.grant_tokens + b.expired_tokens + b.reserved_tokens + b.spent_tokens
        assert b.credited_micro == b.credit_micro + b.reserved_micro + b.spent_micro
        first: dict[str, Settlement] = {}
        for r, _, _, s in settlements:
            first.setdefault(r.id, s)
        assert b.spent_tokens == sum(s.grant_tokens for s in first.values())
        assert b.spent_micro == sum(s.credit_micro for s in first.values())
        for r, p, c, s in settlements:
            if s is not first[r.id]:
                assert s == first[r.id]  # idempotent
                continue
            assert s.grant_tokens + s.unbilled_tokens <= p + c
            if p <= r.prompt_tokens and c <= r.max_tokens:  # within the reservation: exact charge, nothing unbilled
                assert s.unbilled_tokens == 0 and s.grant_tokens <= r.grant_tokens
                rest = p + c - s.grant_tokens
                rp = max(0, p - s.grant_tokens)
                price = tenant.prices[r.model]
                pico = rp * round(price.input_usd_per_mtok * 1e6) + (rest - rp) * round(price.output_usd_per_mtok * 1e6)
                assert s.credit_micro == _ceil_micro(pico) <= r.credit_micro

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(f"sqlite:///{Path(tmp) / 'l.db'}"))


# ---- concurrency: 1,000 requests against a grant for 100 --------------------------------------------------

async def admit_1000_against_100(led: Any, db: Ledger, rng: random.Random) -> None:
    """1,000 requests of each of two tenants at once, each tenant's balance covering exactly 100 worst cases:
    exactly 100 each are admitted, the rest refused; settled at random usage, the ledger balances to the token.
    ``led`` is the metering under test (strict :class:`Ledger` or the leased one), ``db`` its database."""
    db.grant("free", 100 * 150, None)
    db.credit("pay", 100 * 150 * 20 / 1e6)  # the "*" price: 20 US$ per Mtok output; worst case 150 tokens
    await led.start()
    results = await asyncio.gather(
        *(led.reserve(FREE, f"q{i}", "m", 50, 100) for i in range(1000)),
        *(led.reserve(PAYING, f"p{i}", "mx", 0, 150) for i in range(1000)),
        return_exceptions=True)
    free = [r for r in results[:1000] if isinstance(r, Reservation)]
    paid = [r for r in results[1000:] if isinstance(r, Reservation)]
    assert len(free) == 100 and len(paid) == 100
    assert all(isinstance(r, InsufficientFunds) for r in results if not isinstance(r, Reservation))
    used = {r.id: rng.randint(0, 100) for r in free + paid}
    settled = await asyncio.gather(*(led.settle(r, r.prompt_tokens, used[r.id]) for r in free + paid))
    await led.close()
    bf, bp = db.balance("free"), db.balance("pay")
    spent = sum(50 + used[r.id] for r in free)
    assert (bf.spent_tokens, bf.grant_tokens, bf.reserved_tokens, bf.pending, bf.leases) == (spent, 15000 - spent,
                                                                                            0, 0, 0)
    assert bp.spent_micro == sum(used[r.id] * 20 for r in paid) == sum(s.credit_micro for s in settled)
    assert bp.credit_micro == 300_000 - bp.spent_micro
    audit = db.audit()
    assert audit.ok, audit.problems
    assert audit.settled == 200 and audit.pending == 0 and audit.leases == 0


def test_thousand_concurrent_requests_against_a_grant_for_100(url: str) -> None:
    """Bound: a request is admitted only when its worst case (prompt + max_tokens) is reserved, so at most
    floor(grant / (prompt + max_tokens)) = 100 run at once; the ledger then balances to the token."""
    led = Ledger.open(url, instance_id="gw")
    asyncio.run(admit_1000_against_100(led, led, random.Random(5)))


def test_two_instances_sharing_postgresql_never_overspend(pg_url: str) -> None:
    async def run() -> None:
        a = Ledger.open(pg_url, instance_id="gw-a")
        b = Ledger.open(pg_url, instance_id="gw-b")
        a.grant("free", 60 * 100, None)
        a.credit("pay", 40 * (40 * 10 + 60 * 20) / 1e6)  # credits for 40 more at the "*" price (10/20 US$/Mtok)
        a.grant("pay", 60 * 100, None)
        await a.start()
        await b.start()

        async def burst(led: Ledger, tenant: Tenant, n: int) -> list[Reservation]:
            out = await asyncio.gather(*(led.reserve(tenant, f"q{i}", "mx", 40, 60) for i in range(n)),
                                       return_exceptions=True)
            return [r for r in out if isinstance(r, Reservation)]

        ra, rb, pa, pb = await asyncio.gather(burst(a, FREE, 400), burst(b, FREE, 400),
                                              burst(a, PAYING, 400), burst(b, PAYING, 400))
        assert len(ra) + len(rb) == 60
        assert len(pa) + len(pb) == 100
        await asyncio.gather(*(a.settle(r, 40, 60) for r in ra + pa), *(b.settle(r, 40, 60) for r in rb + pb))
        await a.close()
        await b.close()
        free, pay = a.balance("free"), a.balance("pay")
        assert (free.spent_tokens, free.grant_tokens) == (6000, 0)
        assert (pay.spent_tokens, pay.grant_tokens, pay.credit_micro, pay.spent_micro) == (6000, 0, 0, 64_000)
        assert a.audit().ok

    asyncio.run(run())


def test_lost_postgresql_connection_is_reopened_and_the_batch_retried(pg_url: str) -> None:
    async def run() -> None:
        led = Ledger.open(pg_url)
        led.grant("free", 1000, None)
        await led.start()
        r = await led.reserve(FREE, "q", "m", 1, 9)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (pg_url.rsplit("/", 1)[1],))
        s = await led.settle(r, 1, 4)
        assert s.grant_tokens == 5 and led.stats.retries >= 1 and led.stats.failed_ops == 0
        await led.close()
        assert led.balance("free").spent_tokens == 5 and led.audit().ok

    asyncio.run(run())


# ---- kill -9 mid-stream, restart: no lost and no double charge --------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from sovcloud.metering.ledger import Ledger
    from sovcloud.metering.tenants import ModelPrice, Tenant

    async def main(url):
        led = Ledger.open(url, instance_id="gw1", progress_block=8)
        t = Tenant("t1", "T", "de", prices={"*": ModelPrice(1.0, 2.0)})
        await led.start()
        a = await led.reserve(t, "a", "m", 10, 100)
        await led.settle(a, 10, 40)
        b = await led.reserve(t, "b", "m", 10, 100)
        c = await led.reserve(t, "c", "m", 10, 1000)
        print(json.dumps({"a": a.id, "b": b.id, "c": c.id}), flush=True)
        n = 0
        while True:
            n += 1
            await led.progress(c, n)
            print(n, flush=True)  # token n forwarded to the client
            await asyncio.sleep(0.001)

    asyncio.run(main(sys.argv[1]))
""")


def stream_until_killed(script: Path, *args: str) -> tuple[dict[str, str], int]:
    """Run ``script`` (it prints its reservation ids as JSON, then one line per token it forwards), SIGKILL
    it after a random 20-60 tokens; returns the ids and the last token it reported forwarded."""
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    delivered = 0
    try:
        assert proc.stdout is not None
        ids = json.loads(proc.stdout.readline() or "{}")
        assert ids, proc.stderr.read() if proc.stderr else ""
        target = random.Random().randint(20, 60)
        while delivered < target:
            delivered = int(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    rest = proc.stdout.read().split() if proc.stdout else []
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return ids, int(rest[-1]) if rest else delivered


def test_kill_9_mid_stream_then_recover(url: str, tmp_path: Path) -> None:
    Ledger.open(url).grant("t1", 1500, None)
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    ids, delivered = stream_until_killed(script, url)

    assert Ledger.open(url, instance_id="gw2").recover() == 0  # another instance's reservations are not its own
    led = Ledger.open(url, instance_id="gw1")
    before = led.balance("t1")
    assert before.pending == 2
    assert led.recover() == 2
    assert led.recover() == 0

    async def check() -> None:
        await led.start()
        a = await led.settle(Reservation(ids["a"], "t1", "m", 0, 0.0, 10, 100), 0, 0)
        c = await led.settle(Reservation(ids["c"], "t1", "m", 0, 0.0, 10, 1000), 0, 0)
        with pytest.raises(LedgerError, match="released"):
            await led.settle(Reservation(ids["b"], "t1", "m", 0, 0.0, 10, 100), 0, 0)
        await led.close()
        assert (a.prompt_tokens, a.completion_tokens, a.recovered) == (10, 40, False)  # not charged again
        assert c.recovered and c.prompt_tokens == 10
        assert delivered <= c.completion_tokens <= delivered + 8, (delivered, c)
        b = led.balance("t1")
        assert b.spent_tokens == 50 + 10 + c.completion_tokens
        assert (b.pending, b.reserved_tokens, b.grant_tokens) == (0, 0, 1500 - b.spent_tokens)

    asyncio.run(check())
    audit = led.audit()
    assert audit.ok, audit.problems


# ---- errors ----------------------------------------------------------------------------------------

def test_bad_urls_are_ledger_errors(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="unsupported database 'mysql'"):
        Ledger.open("mysql://x@localhost/db")
    with pytest.raises(LedgerError, match="cannot be parsed"):
        Ledger.open("not a url")
    with pytest.raises(LedgerError, match="needs a file path"):
        Ledger.open("sqlite:///:memory:")
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(LedgerError, match="cannot open the ledger database"):
        Ledger.open(f"sqlite:///{blocker}/sub/ledger.db")
    with pytest.raises(LedgerError, match=r"pg_ctlcluster --skip-systemctl-redirect") as exc:
        Ledger.open("postgresql://postgres:secret@127.0.0.1:1/none")
    assert "secret" not in str(exc.value) and exc.value.__cause__ is not None


def test_default_url_and_writer_required(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("SOVCLOUD_LEDGER", "sqlite:///x.db")
    assert default_ledger_url() == "sqlite:///x.db"
    monkeypatch.delenv("SOVCLOUD_LEDGER")
    assert default_ledger_url().endswith(".sovcloud/ledger.db")
    led = Ledger.open(sqlite_url)
    with pytest.raises(LedgerError, match="start"):
        asyncio.run(led.reserve(FREE, "q", "m", 1, 1))
    assert math.isclose(led.balance("nobody").credit_usd, 0.0)
