"""Tenants and workloads shared by the tests of the strict ledger and of the leased one.

* :data:`FREE` has no prices (grants only); :data:`PAYING` has a price for ``m1`` and a default ``"*"``.
* :func:`admit_1000_against_100`: 2 x 1,000 concurrent requests against balances for exactly 100 each.
* :func:`stream_until_killed`: a child process streaming tokens, killed with SIGKILL mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sovcloud.errors import InsufficientFunds
from sovcloud.metering.ledger import Ledger, Reservation
from sovcloud.metering.tenants import ModelPrice, Tenant

__all__ = ["FREE", "PAYING", "admit_1000_against_100", "ceil_micro", "stream_until_killed"]

FREE = Tenant("free", "Free", "de")  # no prices: grants only
PAYING = Tenant("pay", "Paying", "fr", prices={"m1": ModelPrice(1.0, 2.0), "*": ModelPrice(10.0, 20.0)})


def ceil_micro(pico: int) -> int:
    """Pico-US$ rounded up to the micro-US$, as the ledger charges."""
    return -(-pico // 1_000_000)


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
