"""The database written behind the requests of a leasing gateway instance.

A charge (a request settled in memory) or a lease close is journaled before it is queued here, so the
request path never waits for the database: :meth:`WriteBehind.flush` queues the operation, and every
``delay`` seconds what is queued goes to the ledger's writer together (one transaction for many charges
instead of one each). Once the writer committed an operation its journal records are done (the journal
may drop them) and its pool has one unflushed charge less. An operation that could not be submitted or
committed stays in the journal and is queued again by :meth:`WriteBehind.resubmit` (called periodically
and on shutdown); a charge is idempotent by request id, so a retry after an ambiguous commit is safe.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sovcloud.errors import LedgerError
from sovcloud.metering.journal import Journal
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.pool import LeaseStats, Pool
from sovcloud.metering.records import Op

__all__ = ["WriteBehind"]

log = logging.getLogger("sovcloud.metering.ledger")

_Queued = tuple[Op, list[int], Pool | None]  # the operation, its journal segments, the pool it counts against


class WriteBehind:
    """Operations queued for ``ledger``'s writer every ``delay`` seconds, retried until committed."""

    def __init__(self, ledger: Ledger, journal: Journal, stats: LeaseStats, delay: float) -> None:
        self.ledger = ledger
        self.journal = journal
        self.stats = stats
        self.delay = delay
        self._retry: list[_Queued] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self._queued: list[_Queued] = []
        self._drain_at: asyncio.TimerHandle | None = None

    def flush(self, op: Op, segs: list[int], pool: Pool | None) -> None:
        """Queue ``op`` (journaled in ``segs``) for the database; queued operations go to the writer together
        every ``delay`` seconds (the journal already holds them)."""
        if pool is not None:
            pool.unflushed += 1
        self._queued.append((op, segs, pool))
        if self._drain_at is None:
            self._drain_at = asyncio.get_running_loop().call_later(self.delay, self.drain)

    def drain(self) -> None:
        """Submit everything queued now; an operation the writer refuses at once is kept for a retry."""
        if self._drain_at is not None:
            self._drain_at.cancel()
            self._drain_at = None
        queued, self._queued = self._queued, []
        for op, segs, pool in queued:
            try:
                fut = self.ledger.submit(op)
            except LedgerError:
                self._retry.append((op, segs, pool))
                continue
            self._inflight.add(fut)
            fut.add_done_callback(functools.partial(self._flushed, op=op, segs=segs, pool=pool))

    def _flushed(self, fut: asyncio.Future[Any], op: Op, segs: list[int], pool: Pool | None) -> None:
        self._inflight.discard(fut)
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            log.warning("charge not committed yet; it stays in the journal and is retried",
                        extra={"fields": {"reservation": op.rid, "error": str(exc)}})
            self._retry.append((op, segs, pool))
            return
        if pool is not None:
            pool.unflushed -= 1
        self.journal.done(segs)
        if op.kind == "charge":
            self.stats.charges += 1

    def resubmit(self) -> None:
        """Send what is queued now, with the operations that failed before."""
        retry, self._retry = self._retry, []
        self.stats.retries += len(retry)
        self._queued.extend(retry)
        self.drain()

    async def finish(self, rounds: int = 20, pause_s: float = 0.25) -> None:
        """On shutdown: submit everything and wait for it, up to ``rounds`` times while some fail (``pause_s``
        apart); what still fails stays in the journal for recovery at the next start."""
        for _ in range(rounds):
            self.resubmit()
            if self._inflight:
                await asyncio.wait(list(self._inflight))
            if not self._retry:
                break
            await asyncio.sleep(pause_s)
