"""Metering off the hot path: each gateway instance admits and settles requests in memory, against balance
it has leased from the ledger, and records every step in a local journal before acting on it.

Sets and quantities (integers throughout; money in micro-US$, as in :mod:`sovcloud.metering.pricing`):

* ``t`` a tenant, ``g`` one of its grants, ``i`` this instance (its ``instance_id``).
* A **lease** of ``(i, t)`` is one database transaction that moves ``L_g`` tokens of grant ``g`` and ``M``
  micro-US$ of credit from *available* to *reserved* and records them on a row of ``ledger_leases``.
  It asks for ``max(need, min(target, fraction * available))`` of each (``need``: the request waiting
  for it, ``fraction`` leaves the rest to other instances) and never more than is available.
* The **pool** of ``(i, t)`` (:class:`~sovcloud.metering.pool.Pool`) holds in memory what its leases hold
  and no request has taken: ``a_g`` tokens per grant and ``m`` micro-US$.
* **reserve** runs the ledger's own rule (:func:`~sovcloud.metering.pricing.hold`: grants first, earliest
  expiry first, then credit at the model's price) on the pool. When the pool cannot cover the worst case it
  takes a new lease (one in flight per pool; concurrent requests wait for it) and tries again; when a
  lease finds nothing more, the request is refused (``InsufficientFunds``, the gateway's 402). A pool that
  falls below ``refill_below`` of what its last lease brought takes the next lease in the background.
* **settle** runs :func:`~sovcloud.metering.pricing.split` on the request's parts (usage beyond them is
  first taken from the pool, the rest left for the database to cover from unleased balance, else recorded
  as unbilled); the used part becomes a **charge**, the unused part returns to the pool.
* The invariant, per ``(i, t, g)``: ``sum of open leases' held_g = a_g + sum over open requests of their
  parts_g + sum over charges not yet committed of their used_g`` (and likewise for credit). So requests
  never spend more than was leased, leases never hold more than was available, and, summed over every
  instance sharing one database, the tenant can never overspend.

The database is written behind (:mod:`sovcloud.metering.writebehind`): a charge is queued on the ledger's
writer (group commit, no waiting on the request path) and applied by the batch
(:class:`~sovcloud.metering.book.Batch`), which moves its used tokens and money from the instance's leases
to spent and inserts the request's settled row (idempotent by request id). A pool left idle for
``idle_s`` with nothing open or unflushed is closed: what its leases still hold returns to available
(also on shutdown).

Durability: every step is journaled (:mod:`sovcloud.metering.journal`) before it is acted on, and
:meth:`LeasedLedger.recover` replays the journal after a crash (:mod:`sovcloud.metering.recovery`), so
nothing delivered is ever lost and nothing is charged twice.

What leasing costs: a request can be refused while part of the tenant's balance sits in another
instance's pool (at most ``fraction`` of what was available when that lease was made; leases return
after ``idle_s`` without requests); ``balance()`` counts leased balance as reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sovcloud.errors import InsufficientFunds, LedgerError, LedgerValueError
from sovcloud.metering.db import LedgerDB
from sovcloud.metering.journal import Journal
from sovcloud.metering.ledger import AuditResult, Balance, Ledger, check_tokens, tenant_prices
from sovcloud.metering.pool import Child, LeaseOptions, LeaseStats, Pool
from sovcloud.metering.pricing import PICO_PER_MICRO, hold, refusal
from sovcloud.metering.records import Charge, LeaseAsk, LeaseGrant, Op, Reservation, Settlement
from sovcloud.metering.recovery import recover
from sovcloud.metering.tenants import Tenant
from sovcloud.metering.writebehind import WriteBehind

# LeaseOptions and LeaseStats: re-exported, the gateway configures and reads a leased ledger through them
__all__ = ["LeaseOptions", "LeaseStats", "LeasedLedger", "default_journal_dir"]

log = logging.getLogger("sovcloud.metering.ledger")
# The writer commits behind the requests, which never wait for it: on a busy core the event loop comes first
WRITER_NICE = 10
_KEEP_SETTLED = 4096  # settlements remembered for an idempotent second settle


class LeasedLedger:
    """The gateway's metering (the :class:`~sovcloud.gateway.parts.Metering` protocol) over leases, a
    journal and a :class:`~sovcloud.metering.ledger.Ledger` written behind (see the module docstring)."""

    premark = False  # a progress mark is a journal line: no need to mark ahead of delivery

    def __init__(self, ledger: Ledger, journal: Journal, options: LeaseOptions | None = None) -> None:
        if not ledger.instance_id:
            raise LedgerValueError("a leased ledger needs the ledger's instance_id "
                                   "(its leases and recovery are its own)")
        self.ledger = ledger
        self.journal = journal
        self.options = options or LeaseOptions()
        self.instance_id: str = ledger.instance_id
        self.progress_block = ledger.progress_block
        self.stats = LeaseStats()
        self.clock: Callable[[], float] = time.time  # grant expiry
        self._pools: dict[str, Pool] = {}
        self._children: dict[str, Child] = {}
        # settled requests as plain tuples of numbers: the garbage collector stops tracking those, so thousands
        # of them do not lengthen every full collection (a pause every few seconds under load)
        self._settled: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._writes = WriteBehind(ledger, journal, self.stats, self.options.write_behind_s)
        self._maintenance: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    def open(cls, url: str, instance_id: str, journal: Path, *, options: LeaseOptions | None = None,
             progress_block: int = 32, fsync: bool = False) -> LeasedLedger:
        """The ledger at ``url`` with this instance's journal in the folder ``journal`` (locked while open)."""
        j = Journal(journal, fsync=fsync)
        j.open()
        try:
            led = Ledger.open(url, instance_id=instance_id, progress_block=progress_block, writer_nice=WRITER_NICE)
            return cls(led, j, options)
        except BaseException:
            j.close()
            raise

    @property
    def url(self) -> str:
        return self.ledger.url

    # ---- lifecycle -----------------------------------------------------------------------------------
    def recover(self) -> int:
        """Before serving: settle what a crashed run of this instance left (strict reservations, then the
        journal's requests), close its leases. Returns how many requests were recovered."""
        return recover(self.ledger, self.journal, self.instance_id)

    async def start(self) -> None:
        self._closing = False
        await self.ledger.start()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def close(self) -> None:
        """Charge what is still open at its progress mark, flush every charge, return every lease."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        self._closing = True
        leasing = [p.extending for p in self._pools.values() if p.extending is not None]
        if leasing:  # a lease in flight must land in its pool, to be returned with it
            await asyncio.gather(*leasing, return_exceptions=True)
        for rid, child in list(self._children.items()):
            if child.mark > 0:
                await self.settle(child.reservation(rid), child.prompt, min(child.mark, child.max_tokens))
            else:
                await self.release(child.reservation(rid))
        await self._writes.finish()
        closes = [op for tid, pool in self._pools.items() if (op := self._close_op(tid, pool)) is not None]
        self._pools.clear()
        for op in closes:
            with contextlib.suppress(LedgerError):  # else recovery closes it at the next start
                await self.ledger.submit(op)
        await self.ledger.close()
        self.journal.close()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.options.idle_s / 2))
            self._writes.resubmit()
            now = time.monotonic()
            for tid, pool in list(self._pools.items()):
                if (pool.open == 0 and pool.unflushed == 0 and pool.waiting == 0 and pool.extending is None
                        and now - pool.last >= self.options.idle_s):
                    del self._pools[tid]
                    op = self._close_op(tid, pool)
                    if op is not None:
                        self._writes.flush(op, [], None)  # retried until committed

    def _close_op(self, tenant_id: str, pool: Pool) -> Op | None:
        if not pool.leases:
            return None
        self.stats.closes += 1
        return Op("close", "C" + self.ledger.new_id(), tenant_id, instance_id=self.instance_id,
                  extra=tuple(pool.leases))

    # ---- the hot path: no database round trip unless a lease is needed --------------------------------
    async def reserve(self, tenant: Tenant, request_id: str, model: str, prompt_tokens: int,
                      max_tokens: int) -> Reservation:
        """Hold the worst case from the tenant's pool (leasing more when it falls short); InsufficientFunds
        when neither the pool nor a new lease can cover it."""
        check_tokens(prompt_tokens, max_tokens)
        if self._closing:
            raise LedgerError("the ledger is closing; no new admissions")
        pin, pout = tenant_prices(tenant, model)
        pool = self._pools.get(tenant.id)
        if pool is None:
            pool = self._pools[tenant.id] = Pool()
        pool.last = time.monotonic()
        h = hold(pool.grants, pool.credit, prompt_tokens, max_tokens, pin, pout, self.clock())
        while not h.ok:
            need = prompt_tokens + max_tokens
            micro = 0 if pin < 0 else -(-(prompt_tokens * pin + max_tokens * pout) // PICO_PER_MICRO)
            if not await self._extend(tenant.id, pool, need, micro):
                raise InsufficientFunds(refusal(tenant.id, model, prompt_tokens, max_tokens, h, pin, pout,
                                                pool.credit))
            h = hold(pool.grants, pool.credit, prompt_tokens, max_tokens, pin, pout, self.clock())
        rid = self.ledger.new_id()
        parts = [(g.id, take) for g, take in h.plan]
        now = self.clock()
        seg = self.journal.append({"k": "R", "id": rid, "t": tenant.id, "m": model, "q": request_id, "pi": pin,
                                   "po": pout, "p": prompt_tokens, "x": max_tokens, "g": parts, "c": h.credit,
                                   "ts": now})
        pool.take(h.plan, h.credit)
        child = Child(tenant.id, pool, model, request_id, pin, pout, prompt_tokens, max_tokens, parts, h.credit, now)
        child.segs.append(seg)
        self._children[rid] = child
        if pool.extending is None and pool.last >= pool.dry_until and pool.low(self.options.refill_below):
            pool.extending = asyncio.ensure_future(self._lease(tenant.id, pool, 0, 0))
            pool.extending.add_done_callback(_retrieve)
        return Reservation(rid, tenant.id, model, h.from_grants, h.credit / 1e6, prompt_tokens, max_tokens, h.credit,
                           request_id)

    async def _extend(self, tenant_id: str, pool: Pool, tokens: int, micro: int) -> bool:
        """Wait for a lease for ``pool`` (the one in flight, else a new one); True when it got anything."""
        fut = pool.extending
        if fut is None:
            fut = pool.extending = asyncio.ensure_future(self._lease(tenant_id, pool, tokens, micro))
        pool.waiting += 1
        try:
            return await asyncio.shield(fut)
        finally:
            pool.waiting -= 1

    async def _lease(self, tenant_id: str, pool: Pool, tokens: int, micro: int) -> bool:
        """Lease at least ``tokens`` and ``micro`` (the waiting request's worst case; 0 for a background
        refill) into ``pool``; False when the lease found nothing (then no background lease for a second)."""
        o = self.options
        ask = LeaseAsk(tokens, max(o.tokens, tokens), micro, max(o.micro, micro), o.fraction)
        try:
            got: LeaseGrant = await self.ledger.submit(Op("lease", "L" + self.ledger.new_id(), tenant_id,
                                                          instance_id=self.instance_id, extra=ask))
        finally:
            pool.extending = None
        pool.add(got)
        self.stats.leases += 1
        if not (got.grants or got.micro):
            pool.dry_until = time.monotonic() + 1.0
            return False
        return True

    async def progress(self, reservation: Reservation, completion_tokens: int) -> None:
        """Journal the mark ``min(max_tokens, n + B - 1)`` once ``n`` delivered tokens pass the last one."""
        child = self._children.get(reservation.id)
        if child is None or completion_tokens <= child.mark:
            return
        mark = max(completion_tokens, min(child.max_tokens, completion_tokens + self.progress_block - 1))
        child.segs.append(self.journal.append({"k": "P", "id": reservation.id, "n": mark}))
        child.mark = mark

    async def settle(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int) -> Settlement:
        """Charge the actual usage (journaled at once, committed behind); a second settle returns the first."""
        check_tokens(prompt_tokens, completion_tokens)
        rid = reservation.id
        child = self._children.get(rid)
        if child is None:
            done = self._settled.get(rid)
            if done is not None:
                return Settlement(*done)
            raise LedgerError(f"reservation {rid} of tenant {reservation.tenant_id} is not open on this instance "
                              "(released, or admitted by another)")
        pool = child.pool
        parts, credit, sp = child.usage(prompt_tokens, completion_tokens, self.clock)
        seg = self.journal.append({"k": "S", "id": rid, "p": prompt_tokens, "c": completion_tokens, "g": parts,
                                   "cr": credit})
        pool.settled(child, parts, sp)
        del self._children[rid]
        child.segs.append(seg)
        charge = Charge(child.prompt, child.max_tokens, tuple(parts), credit, tuple(sorted(sp.used.items())), sp.money,
                        sp.rp, sp.rc, child.mark, False, child.created)
        self._writes.flush(Op("charge", rid, child.tenant_id, prompt_tokens, completion_tokens, child.model,
                              child.request_id, child.pin, child.pout, self.instance_id, extra=charge), child.segs,
                           pool)
        fields = (rid, prompt_tokens, completion_tokens, sum(sp.used.values()), sp.money / 1e6, sp.money,
                  sp.rp + sp.rc, False)
        self._settled[rid] = fields
        if len(self._settled) > _KEEP_SETTLED:
            self._settled.popitem(last=False)
        return Settlement(*fields)

    async def release(self, reservation: Reservation) -> None:
        """Return the whole reservation to the pool (nothing was delivered). No-op once settled."""
        child = self._children.pop(reservation.id, None)
        if child is None:
            return
        child.pool.release(child)
        try:
            child.segs.append(self.journal.append({"k": "X", "id": reservation.id}))
        except LedgerError as exc:  # recovery may then charge up to one progress block: logged
            log.error("journal write failed on release", extra={"fields": {"reservation": reservation.id,
                                                                            "error": str(exc)}})
        self.journal.done(child.segs)

    # ---- reading and admin (the database; leased balance counts as reserved) --------------------------
    def balance(self, tenant_id: str) -> Balance:
        return self.ledger.balance(tenant_id)

    def audit(self, tenant_id: str | None = None) -> AuditResult:
        return self.ledger.audit(tenant_id)


def default_journal_dir(url: str, instance_id: str) -> Path:
    """Beside an SQLite ledger (``<file>.journal/<instance>``), else ``~/.sovcloud/journal/<instance>``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", instance_id)
    db = LedgerDB.parse(url)
    base = Path(db.target + ".journal") if db.kind == "sqlite" else Path.home() / ".sovcloud" / "journal"
    return base / safe


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Log the failure of a background lease (nobody awaits it)."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("ledger background operation failed", extra={"fields": {"error": str(fut.exception())}})
