"""The strict ledger under load and failure: 1,000 concurrent requests against a grant for 100, two
instances sharing PostgreSQL, a lost connection, and kill -9 mid-stream followed by recovery."""

from __future__ import annotations

import asyncio
import random
import textwrap
from pathlib import Path

import psycopg
import pytest

from sovcloud.errors import LedgerError
from sovcloud.metering.ledger import Ledger, Reservation
from sovcloud.metering.tenants import Tenant
from tests.metering.scenarios import FREE, PAYING, admit_1000_against_100, stream_until_killed
from tests.support.gateway import PG_ADMIN


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


# ---- concurrency: 1,000 requests against a grant for 100 --------------------------------------------------

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
