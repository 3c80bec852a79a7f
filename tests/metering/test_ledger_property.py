"""Property: any random sequence of reserve, settle, release, progress, grant and credit leaves the strict
ledger balanced, every settlement charged exactly (within its reservation) and idempotent."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovcloud.errors import InsufficientFunds, LedgerError
from sovcloud.metering.ledger import Ledger, Reservation, Settlement
from sovcloud.metering.tenants import ModelPrice, Tenant
from tests.metering.scenarios import ceil_micro

_action = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 300), st.integers(0, 300), st.sampled_from(["m1", "m2"])),
    st.tuples(st.just("settle"), st.integers(0, 50), st.floats(0, 1.3), st.floats(0, 1.3)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("progress"), st.integers(0, 50), st.integers(0, 400)),
    st.tuples(st.just("grant"), st.integers(1, 2000), st.sampled_from([None, -1, 1])),
    st.tuples(st.just("credit"), st.integers(1, 5000)),
)


@pytest.mark.slow
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
                assert s.credit_micro == ceil_micro(pico) <= r.credit_micro

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(f"sqlite:///{Path(tmp) / 'l.db'}"))
