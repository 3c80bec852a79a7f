"""The leased ledger: admission in memory against leases, a journal, the database written behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovcloud.errors import InsufficientFunds, LedgerError
from sovcloud.metering.lease import WRITER_NICE, LeasedLedger, LeaseOptions
from sovcloud.metering.ledger import Ledger, Reservation, Settlement
from sovcloud.metering.tenants import ModelPrice, Tenant
from tests.metering.scenarios import FREE, PAYING, admit_1000_against_100, stream_until_killed
from tests.support.gateway import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        with pg_database() as u:
            yield u


def _open(url: str, tmp_path: Path, iid: str = "gw", **opts: object) -> LeasedLedger:
    return LeasedLedger.open(url, iid, tmp_path / f"journal-{iid}", options=LeaseOptions(**opts),  # type: ignore[arg-type]
                             progress_block=8)


def test_leases_admit_in_memory_and_balance_after_close(url: str, tmp_path: Path) -> None:
    async def run() -> None:
        led = _open(url, tmp_path, tokens=400, micro=2000)
        led.ledger.grant("pay", 1000, None)
        led.ledger.credit("pay", 0.01)  # 10,000 micro-US$
        await led.start()
        r1 = await led.reserve(PAYING, "q1", "m1", 300, 1000)  # 1,000 from grants, 300 at 2 US$/Mtok from credit
        assert (r1.grant_tokens, r1.credit_micro) == (1000, 600)
        assert led.stats.leases >= 1
        b = led.balance("pay")  # the database: leased balance is reserved
        assert b.leases >= 1 and b.reserved_tokens == b.leased_tokens and b.pending == 0
        s1 = await led.settle(r1, 300, 500)  # 800 tokens, all from the grant part
        assert (s1.grant_tokens, s1.credit_micro, s1.unbilled_tokens) == (800, 0, 0)
        assert await led.settle(r1, 1, 1) == s1  # idempotent
        r2 = await led.reserve(PAYING, "q2", "m1", 0, 100)
        await led.release(r2)
        with pytest.raises(LedgerError, match="not open"):
            await led.settle(r2, 0, 10)
        r3 = await led.reserve(PAYING, "q3", "zz", 10, 10)  # the "*" price
        s3 = await led.settle(r3, 10, 20)  # beyond max_tokens: more from the pool
        assert s3.prompt_tokens == 10 and s3.completion_tokens == 20
        await led.close()
        b = led.balance("pay")
        assert (b.leases, b.pending, b.reserved_tokens, b.reserved_micro) == (0, 0, 0, 0)
        assert b.spent_tokens + b.grant_tokens == 1000
        assert b.spent_tokens == s1.grant_tokens + s3.grant_tokens
        assert b.spent_micro == s1.credit_micro + s3.credit_micro
        audit = led.audit()
        assert audit.ok, audit.problems
        assert audit.settled == 2 and audit.leases == 0
        assert not list((tmp_path / "journal-gw").glob("seg-*"))  # everything committed: the journal is empty

    asyncio.run(run())


def test_thousand_concurrent_requests_against_a_grant_for_100(url: str, tmp_path: Path) -> None:
    """Leases are carved out of the balance, so admission keeps the strict bound: exactly 100 fit."""
    led = _open(url, tmp_path)
    asyncio.run(admit_1000_against_100(led, led.ledger, random.Random(7)))


def test_two_instances_sharing_postgresql_never_overspend(tmp_path: Path) -> None:
    with pg_database() as url:
        async def run() -> None:
            a, b = _open(url, tmp_path, "gw-a"), _open(url, tmp_path, "gw-b")
            a.ledger.grant("free", 60 * 100, None)
            await a.start()
            await b.start()
            results = await asyncio.gather(*(x.reserve(FREE, f"q{i}", "m", 40, 60) for i in range(300)
                                             for x in (a, b)), return_exceptions=True)
            ok = [(i, r) for i, r in enumerate(results) if isinstance(r, Reservation)]
            assert all(isinstance(r, InsufficientFunds) for r in results if not isinstance(r, Reservation))
            assert 0 < len(ok) <= 60  # leases are disjoint: never more than the balance covers
            await asyncio.gather(*((a, b)[i % 2].settle(r, 40, 60) for i, r in ok))
            await a.close()
            await b.close()
            bal = a.balance("free")
            assert bal.spent_tokens == 100 * len(ok) and bal.leases == 0 and bal.reserved_tokens == 0
            audit = a.audit()
            assert audit.ok, audit.problems

        asyncio.run(run())


def test_a_journal_is_one_instance_s(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first = _open(url, tmp_path)
    with pytest.raises(LedgerError, match="in use by another process"):
        _open(url, tmp_path)
    first.journal.close()
    with pytest.raises(ValueError, match="instance_id"):
        LeasedLedger(Ledger.open(url), first.journal)


def test_a_database_outage_delays_charges_but_loses_none(tmp_path: Path) -> None:
    """Charges that cannot be committed stay in the journal and are retried; nothing is dropped."""
    url = f"sqlite:///{tmp_path / 'l.db'}"

    async def run() -> None:
        led = _open(url, tmp_path)
        led.ledger.grant("free", 10_000, None)
        await led.start()
        rs = [await led.reserve(FREE, f"q{i}", "m", 10, 10) for i in range(5)]
        real = led.ledger.submit
        calls = {"n": 0}

        def broken(op: object) -> asyncio.Future[object]:
            calls["n"] += 1
            raise LedgerError("database down")
        led.ledger.submit = broken  # type: ignore[method-assign,assignment]
        for r in rs:
            await led.settle(r, 10, 5)
        await asyncio.sleep(0.2)  # the write-behind interval passes: the charges are tried, and fail
        assert calls["n"] == 5 and led.journal.outstanding > 0
        led.ledger.submit = real  # type: ignore[method-assign]
        await led.close()  # retries, then commits
        bal = led.balance("free")
        assert bal.spent_tokens == 75 and bal.leases == 0
        assert led.audit().ok

    asyncio.run(run())


# ---- kill -9, restart: the journal brings back every charge, once ----------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from sovcloud.metering.lease import LeasedLedger, LeaseOptions
    from sovcloud.metering.tenants import ModelPrice, Tenant

    async def main(url, journal):
        led = LeasedLedger.open(url, "gw1", Path(journal), progress_block=8, options=LeaseOptions(tokens=1000))
        t = Tenant("t1", "T", "de", prices={"*": ModelPrice(1.0, 2.0)})
        await led.start()
        a = await led.reserve(t, "a", "m", 10, 100)
        await led.settle(a, 10, 40)          # settled: charged once, whether or not its commit happened
        b = await led.reserve(t, "b", "m", 10, 100)   # admitted, nothing delivered: not charged
        d = await led.reserve(t, "d", "m", 10, 100)
        await led.progress(d, 1)
        await led.release(d)                 # released: not charged
        c = await led.reserve(t, "c", "m", 10, 1000)
        print(json.dumps({"a": a.id, "b": b.id, "c": c.id}), flush=True)
        n = 0
        while True:
            n += 1
            await led.progress(c, n)
            print(n, flush=True)  # token n forwarded to the client
            await asyncio.sleep(0.001)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_kill_9_then_recover_from_the_journal(url: str, tmp_path: Path) -> None:
    Ledger.open(url).grant("t1", 1500, None)
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    journal = tmp_path / "journal"
    ids, delivered = stream_until_killed(script, url, str(journal))

    before = Ledger.open(url).balance("t1")
    assert before.leases >= 1 and before.pending == 0  # the crash left its leases open
    other = _open(url, tmp_path, "gw2")
    assert other.recover() == 0  # another instance's leases and journal are not its own
    other.journal.close()
    led = LeasedLedger.open(url, "gw1", journal, progress_block=8)
    assert led.recover() in (1, 2)  # c at its progress mark, and a unless its commit had happened
    led.journal.close()
    again = LeasedLedger.open(url, "gw1", journal, progress_block=8)
    assert again.recover() == 0  # nothing twice
    again.journal.close()
    rows = {r[0]: r for r in Ledger.open(url).query(
        "SELECT id, used_prompt, used_completion, recovered FROM ledger_reservations")}
    assert set(rows) == {ids["a"], ids["c"]}  # b and d: nothing delivered, nothing charged
    assert rows[ids["a"]][1:] == (10, 40, 0)
    _, prompt, completion, recovered = rows[ids["c"]]
    assert prompt == 10 and recovered == 1
    assert delivered <= completion <= delivered + 8, (delivered, completion)
    bal = Ledger.open(url).balance("t1")
    assert (bal.leases, bal.pending, bal.reserved_tokens) == (0, 0, 0)
    assert bal.spent_tokens == 50 + 10 + completion and bal.grant_tokens == 1500 - bal.spent_tokens
    audit = Ledger.open(url).audit()
    assert audit.ok, audit.problems


# ---- property: random sequences balance, and match what the strict ledger charges -----------------------

_action = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 300), st.integers(0, 300), st.sampled_from(["m1", "m2"])),
    st.tuples(st.just("settle"), st.integers(0, 50), st.floats(0, 1.3), st.floats(0, 1.3)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("idle"),),
)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_action, min_size=1, max_size=25), st.integers(50, 2000), st.integers(0, 3000))
def test_random_sequences_balance_and_charge_like_the_strict_ledger(actions: list[tuple[object, ...]],
                                                                    grant: int, micro: int) -> None:
    tenant = Tenant("p", "P", "de", prices={"m1": ModelPrice(0.15, 0.6), "m2": ModelPrice(3, 1)})

    async def run(tmp: Path) -> None:
        led = LeasedLedger.open(f"sqlite:///{tmp / 'l.db'}", "gw", tmp / "j",
                                options=LeaseOptions(tokens=300, micro=500, idle_s=0.01))
        led.ledger.grant("p", grant, None)
        if micro:
            led.ledger.credit("p", micro / 1e6)
        await led.start()
        live: list[Reservation] = []
        settled: list[tuple[Reservation, Settlement]] = []
        for act in actions:
            if act[0] == "reserve":
                with contextlib.suppress(InsufficientFunds):
                    live.append(await led.reserve(tenant, "q", str(act[3]), int(act[1]), int(act[2])))  # type: ignore[call-overload]
            elif act[0] in ("settle", "release") and live:
                r = live.pop(int(act[1]) % len(live))  # type: ignore[call-overload]
                if act[0] == "settle":
                    p, c = int(r.prompt_tokens * float(act[2])), int(r.max_tokens * float(act[3]))  # type: ignore[arg-type]
                    settled.append((r, await led.settle(r, p, c)))
                else:
                    await led.release(r)
            elif act[0] == "idle":
                await asyncio.sleep(0.6)  # pools with nothing open are returned
        await led.close()
        audit = led.audit()
        assert audit.ok, audit.problems
        b = led.balance("p")
        assert (b.leases, b.reserved_tokens, b.reserved_micro, b.pending) == (0, 0, 0, 0)
        assert b.grant_tokens + b.spent_tokens == grant and b.credit_micro + b.spent_micro == micro
        assert b.spent_tokens == sum(s.grant_tokens for _, s in settled)
        # within its reservation a request pays exactly what the strict ledger charges: grants first, the
        # rest at the model's price rounded up to the micro-dollar
        for r, s in settled:
            if s.prompt_tokens <= r.prompt_tokens and s.completion_tokens <= r.max_tokens:
                price = tenant.prices[r.model]
                rest = s.prompt_tokens + s.completion_tokens - s.grant_tokens
                rp = max(0, s.prompt_tokens - s.grant_tokens)
                pico = rp * round(price.input_usd_per_mtok * 1e6) + (rest - rp) * round(price.output_usd_per_mtok * 1e6)
                assert s.credit_micro == -(-pico // 1_000_000) and s.unbilled_tokens == 0

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


def test_the_write_behind_thread_yields_the_cpu_to_the_event_loop(tmp_path: Path) -> None:
    """Leased: nobody waits on the writer, so on Linux its thread runs 10 nice levels below the loop (a thread
    attribute there); strict: requests wait on it, so it keeps the process's priority."""
    def writer_nice() -> int:
        (t,) = [t for t in threading.enumerate() if t.name == "sovcloud-ledger"]
        assert t.native_id is not None
        return os.getpriority(os.PRIO_PROCESS, t.native_id)

    async def run() -> None:
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        led = _open(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
        await led.start()
        try:
            want = min(19, base + WRITER_NICE) if sys.platform == "linux" else base
            assert writer_nice() == want
            assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the loop is untouched
        finally:
            await led.close()
        strict = Ledger.open(f"sqlite:///{tmp_path / 's.db'}")
        await strict.start()
        try:
            assert writer_nice() == base
        finally:
            await strict.close()

    asyncio.run(run())
