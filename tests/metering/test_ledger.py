"""The strict ledger: grants before credits, prices, expiry, refusals, release, progress marks, idempotent
batches, the audit and the errors of bad input."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sovcloud.errors import InsufficientFunds, LedgerError, LedgerValueError
from sovcloud.metering.book import Batch
from sovcloud.metering.db import LedgerDB
from sovcloud.metering.ledger import Ledger, Reservation, Settlement, default_ledger_url
from sovcloud.metering.pricing import cover, price_pico
from sovcloud.metering.records import Op
from sovcloud.metering.tenants import ModelPrice, Tenant
from tests.metering.scenarios import FREE, PAYING, ceil_micro


async def _started(url: str, **kw: object) -> Ledger:
    ledger = Ledger.open(url, **kw)  # type: ignore[arg-type]
    await ledger.start()
    return ledger


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
    assert cover(7, 3, 150_000, 600_000, 10**6) == (7, 3, ceil_micro(7 * 150_000 + 3 * 600_000))
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


def test_non_finite_amounts_and_prices_are_ledger_value_errors(sqlite_url: str) -> None:
    led = Ledger.open(sqlite_url)
    for usd in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(LedgerValueError, match="a credit must be a positive amount"):
            led.credit("pay", usd)
    assert led.balance("pay").credited_micro == 0
    assert price_pico(0.15) == 150_000
    for price in (float("nan"), float("inf")):
        with pytest.raises(LedgerValueError, match="not a finite number"):
            price_pico(price)
    odd = Tenant("odd", "Odd", "de", prices={"*": ModelPrice(float("nan"), 1.0)})

    async def run() -> None:
        led.grant("odd", 10, None)
        await led.start()
        with pytest.raises(LedgerValueError, match="not a finite number"):
            await led.reserve(odd, "q", "m", 1, 100)  # the grant cannot cover it: the price is needed
        await led.close()

    asyncio.run(run())
    assert issubclass(LedgerValueError, ValueError)


def test_default_url_and_writer_required(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("SOVCLOUD_LEDGER", "sqlite:///x.db")
    assert default_ledger_url() == "sqlite:///x.db"
    monkeypatch.delenv("SOVCLOUD_LEDGER")
    assert default_ledger_url().endswith(".sovcloud/ledger.db")
    led = Ledger.open(sqlite_url)
    with pytest.raises(LedgerError, match="start"):
        asyncio.run(led.reserve(FREE, "q", "m", 1, 1))
    assert math.isclose(led.balance("nobody").credit_usd, 0.0)
