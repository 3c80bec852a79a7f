"""Metering off the hot path: each gateway instance admits and settles requests in memory, against balance
it has leased from the ledger, and records every step in a local journal before acting on it.

Sets and quantities (integers throughout; money in micro-US$, as in :mod:`sovcloud.ledgerbook`):

* ``t`` a tenant, ``g`` one of its grants, ``i`` this instance (its ``instance_id``).
* A **lease** of ``(i, t)`` is one database transaction that moves ``L_g`` tokens of grant ``g`` and ``M``
  micro-US$ of credit from *available* to *reserved* and records them on a row of ``ledger_leases``.
  It asks for ``max(need, min(target, fraction * available))`` of each (``need``: the request waiting
  for it, ``fraction`` leaves the rest to other instances) and never more than is available.
* The **pool** of ``(i, t)`` holds in memory what its leases hold and no request has taken: ``a_g`` tokens
  per grant and ``m`` micro-US$.
* **reserve** runs the ledger's own rule (:func:`~sovcloud.ledgerbook.hold`: grants first, earliest expiry
  first, then credit at the model's price) on the pool. When the pool cannot cover the worst case it
  takes a new lease (one in flight per pool; concurrent requests wait for it) and tries again; when a
  lease finds nothing more, the request is refused (``InsufficientFunds``, the gateway's 402).
* **settle** runs :func:`~sovcloud.ledgerbook.split` on the request's parts (usage beyond them is first
  taken from the pool, the rest left for the database to cover from unleased balance, else recorded as
  unbilled); the used part becomes a **charge**, the unused part returns to the pool.
* The invariant, per ``(i, t, g)``: ``sum of open leases' held_g = a_g + sum over open requests of their
  parts_g + sum over charges not yet committed of their used_g`` (and likewise for credit). So requests
  never spend more than was leased, leases never hold more than was available, and, summed over every
  instance sharing one database, the tenant can never overspend.

The database is written behind: a charge is queued on the ledger's writer (group commit, no waiting on
the request path) and applied by :meth:`~sovcloud.ledgerbook.Batch._charge`, which moves its used tokens and
money from the instance's leases to spent and inserts the request's settled row (idempotent by request
id). A pool left idle for ``idle_s`` with nothing open or unflushed is closed: what its leases still hold
returns to available (also on shutdown).

Durability (:mod:`sovcloud.ledgerjournal`): ``R`` (reservation, with its parts) is journaled before the
request goes upstream, ``P`` (progress mark ``m = min(max_tokens, n + B - 1)``, once per ``B`` streamed
tokens) before a chunk bringing delivery to ``n`` is forwarded, ``S`` (settlement) before a non-streamed
body is sent, ``X`` on release. After ``kill -9``, :meth:`LeasedLedger.recover` (run at start-up, before
serving) replays the journal: settled requests are charged as settled (unless the database already has
them), open ones at ``prompt + m`` when ``m > 0`` (so ``delivered <= charged <= delivered + B``, as in
:mod:`sovcloud.ledger`), released or unmarked ones not at all; then every open lease of the instance is
closed. Nothing delivered is ever lost, and nothing is charged twice.

What leasing costs: a request can be refused while part of the tenant's balance sits in another
instance's pool (at most ``fraction`` of what was available when that lease was made; leases return
after ``idle_s`` without requests); ``balance()`` counts leased balance as reserved.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovcloud.errors import InsufficientFunds, LedgerError, LedgerValueError
from sovcloud.metering.book import (
    Charge,
    LeaseAsk,
    LeaseGrant,
    Op,
    Reservation,
    Settlement,
    cover,
    hold,
    refusal,
    split,
    take_grants,
)
from sovcloud.metering.db import LedgerDB
from sovcloud.metering.journal import Journal
from sovcloud.metering.ledger import AuditResult, Balance, Ledger, check_tokens, tenant_prices
from sovcloud.metering.tenants import Tenant

__all__ = ["LeaseOptions", "LeaseStats", "LeasedLedger", "default_journal_dir"]

log = logging.getLogger("sovcloud.ledger")
# The writer commits behind the requests, which never wait for it: on a busy core the event loop comes first
WRITER_NICE = 10
_KEEP_SETTLED = 4096  # settlements remembered for an idempotent second settle


@dataclass(frozen=True)
class LeaseOptions:
    """Lease sizes: ``tokens`` of grants and ``micro`` US$ of credit per lease (at most ``fraction`` of what
    is available, at least what the waiting request needs); a new lease is taken in the background when
    the pool falls below ``refill_below`` of what the last lease brought; an idle pool is returned after
    ``idle_s``; charges go to the database together every ``write_behind_s``."""

    tokens: int = 1_000_000
    micro: int = 1_000_000
    fraction: float = 0.5
    idle_s: float = 5.0
    refill_below: float = 0.25
    write_behind_s: float = 0.02

    def __post_init__(self) -> None:
        if (self.tokens < 1 or self.micro < 0 or not 0 < self.fraction <= 1 or self.idle_s <= 0
                or self.write_behind_s < 0):
            raise LedgerValueError(f"bad lease options {self}: tokens >= 1, micro >= 0, 0 < fraction <= 1, idle_s > 0, "
                             "write_behind_s >= 0")


@dataclass
class LeaseStats:
    leases: int = 0
    closes: int = 0
    charges: int = 0
    retries: int = 0


class _PoolGrant:
    __slots__ = ("available", "expires", "id")

    def __init__(self, gid: int, available: int, expires: int | None) -> None:
        self.id, self.available, self.expires = gid, available, expires

    def key(self) -> tuple[bool, int, int]:
        return self.expires is None, self.expires or 0, self.id


class _Pool:
    """What one tenant's leases on this instance hold and no request has taken."""

    __slots__ = ("by_id", "credit", "dry_until", "extending", "grants", "last", "last_micro", "last_tokens", "leases",
                 "open", "unflushed", "waiting")

    def __init__(self) -> None:
        self.grants: list[_PoolGrant] = []  # in spending order (earliest expiry first, then oldest)
        self.by_id: dict[int, _PoolGrant] = {}
        self.credit = 0
        self.leases: list[str] = []
        self.open = 0  # requests admitted and not yet settled or released
        self.unflushed = 0  # charges queued and not yet committed
        self.waiting = 0  # requests waiting for a lease
        self.extending: asyncio.Future[bool] | None = None
        self.last = 0.0  # monotonic time of the last admission
        self.dry_until = 0.0  # no background lease before this (the last one found nothing)
        self.last_tokens = 0  # what the last lease brought
        self.last_micro = 0

    def add(self, grant: LeaseGrant) -> None:
        for gid, tokens, expires in grant.grants:
            g = self.by_id.get(gid)
            if g is None:
                g = self.by_id[gid] = _PoolGrant(gid, 0, expires)
                keys = [x.key() for x in self.grants]
                self.grants.insert(bisect.bisect(keys, g.key()), g)
            g.available += tokens
        self.credit += grant.micro
        if grant.grants or grant.micro:
            self.leases.append(grant.lease_id)
            self.last_tokens, self.last_micro = sum(t for _, t, _ in grant.grants), grant.micro

    def tokens(self) -> int:
        return sum(g.available for g in self.grants)


class _Child:
    """One request admitted in memory."""

    __slots__ = ("created", "credit", "mark", "max_tokens", "model", "parts", "pin", "pool", "pout", "prompt",
                 "request_id", "segs", "tenant_id")

    def __init__(self, tenant_id: str, pool: _Pool, model: str, request_id: str, pin: int, pout: int, prompt: int,
                 max_tokens: int, parts: list[tuple[int, int]], credit: int, created: float) -> None:
        self.tenant_id, self.pool, self.model, self.request_id = tenant_id, pool, model, request_id
        self.pin, self.pout, self.prompt, self.max_tokens = pin, pout, prompt, max_tokens
        self.parts, self.credit, self.created = parts, credit, created
        self.mark = 0
        self.segs: list[int] = []


class LeasedLedger:
    """The gateway's metering (the :class:`~sovcloud.gateway.Metering` protocol) over leases, a journal and
    a :class:`~sovcloud.ledger.Ledger` written behind (see the module docstring)."""

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
        self._pools: dict[str, _Pool] = {}
        self._children: dict[str, _Child] = {}
        # settled requests as plain tuples of numbers: the garbage collector stops tracking those, so thousands
        # of them do not lengthen every full collection (a pause every few seconds under load)
        self._settled: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._retry: list[tuple[Op, list[int], _Pool | None]] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self._queued: list[tuple[Op, list[int], _Pool | None]] = []
        self._drain_at: asyncio.TimerHandle | None = None
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
        recovered = self.ledger.recover()
        ops = self._replay()
        tenants = self.ledger.query("SELECT DISTINCT tenant_id FROM ledger_leases WHERE state=0 AND instance_id=?",
                                    (self.instance_id,))
        closes = [Op("close", "C" + self.ledger.new_id(), t, instance_id=self.instance_id) for (t,) in tenants]
        for res in self.ledger.apply(ops + closes):
            if isinstance(res, BaseException):
                raise LedgerError(f"recovery of instance {self.instance_id!r} failed: {res}") from res
        self.journal.forget_old()
        return recovered + len(ops)

    def _replay(self) -> list[Op]:
        state: dict[str, dict[str, Any]] = {}
        for rec in self.journal.read():
            rid, kind = rec.get("id"), rec.get("k")
            if kind == "R":
                state[str(rid)] = {"r": rec, "mark": 0, "s": None, "x": False}
            elif str(rid) in state:
                st = state[str(rid)]
                if kind == "P":
                    st["mark"] = max(st["mark"], int(rec["n"]))
                elif kind == "S":
                    st["s"] = rec
                elif kind == "X":
                    st["x"] = True
        ops = []
        for rid, st in state.items():
            r, s = st["r"], st["s"]
            if st["x"] or (s is None and st["mark"] <= 0):
                continue  # released, or nothing was delivered
            if s is not None:
                prompt, completion, parts, credit = int(s["p"]), int(s["c"]), s["g"], int(s["cr"])
            else:
                prompt, completion, parts, credit = int(r["p"]), min(st["mark"], int(r["x"])), r["g"], int(r["c"])
            parts = [(int(g), int(t)) for g, t in parts]
            pin, pout = int(r["pi"]), int(r["po"])
            sp = split(parts, credit, prompt, completion, pin, pout)
            charge = Charge(int(r["p"]), int(r["x"]), tuple(parts), credit, tuple(sorted(sp.used.items())), sp.money,
                            sp.rp, sp.rc, st["mark"], s is None, float(r["ts"]))
            ops.append(Op("charge", rid, str(r["t"]), prompt, completion, str(r["m"]), str(r["q"]), pin, pout,
                          self.instance_id, extra=charge))
        return ops

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
                await self.settle(_as_reservation(rid, child), child.prompt, min(child.mark, child.max_tokens))
            else:
                await self.release(_as_reservation(rid, child))
        for _ in range(20):
            self._resubmit()
            if self._inflight:
                await asyncio.wait(list(self._inflight))
            if not self._retry:
                break
            await asyncio.sleep(0.25)
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
            self._resubmit()
            now = time.monotonic()
            for tid, pool in list(self._pools.items()):
                if (pool.open == 0 and pool.unflushed == 0 and pool.waiting == 0 and pool.extending is None
                        and now - pool.last >= self.options.idle_s):
                    del self._pools[tid]
                    op = self._close_op(tid, pool)
                    if op is not None:
                        self._flush(op, [], None)  # retried until committed

    def _close_op(self, tenant_id: str, pool: _Pool) -> Op | None:
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
            pool = self._pools[tenant.id] = _Pool()
        pool.last = time.monotonic()
        h = hold(pool.grants, pool.credit, prompt_tokens, max_tokens, pin, pout, self.clock())
        while not h.ok:
            need = prompt_tokens + max_tokens
            micro = 0 if pin < 0 else -(-(prompt_tokens * pin + max_tokens * pout) // 1_000_000)
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
        for g, take in h.plan:
            g.available -= take
        pool.credit -= h.credit
        child = _Child(tenant.id, pool, model, request_id, pin, pout, prompt_tokens, max_tokens, parts, h.credit, now)
        child.segs.append(seg)
        self._children[rid] = child
        pool.open += 1
        if pool.extending is None and pool.last >= pool.dry_until and self._low(pool):
            pool.extending = asyncio.ensure_future(self._lease(tenant.id, pool, 0, 0))
            pool.extending.add_done_callback(_retrieve)
        return Reservation(rid, tenant.id, model, h.from_grants, h.credit / 1e6, prompt_tokens, max_tokens, h.credit,
                           request_id)

    def _low(self, pool: _Pool) -> bool:
        """Below ``refill_below`` of what the last lease brought, in tokens and in credit alike."""
        rb = self.options.refill_below
        if not (pool.last_tokens or pool.last_micro):
            return False
        return ((pool.last_tokens == 0 or pool.tokens() < rb * pool.last_tokens)
                and (pool.last_micro == 0 or pool.credit < rb * pool.last_micro))

    async def _extend(self, tenant_id: str, pool: _Pool, tokens: int, micro: int) -> bool:
        """Wait for a lease for ``pool`` (the one in flight, else a new one); True when it got anything."""
        fut = pool.extending
        if fut is None:
            fut = pool.extending = asyncio.ensure_future(self._lease(tenant_id, pool, tokens, micro))
        pool.waiting += 1
        try:
            return await asyncio.shield(fut)
        finally:
            pool.waiting -= 1

    async def _lease(self, tenant_id: str, pool: _Pool, tokens: int, micro: int) -> bool:
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
        pool, pin, pout = child.pool, child.pin, child.pout
        parts, credit = list(child.parts), child.credit
        sp = split(parts, credit, prompt_tokens, completion_tokens, pin, pout)
        if sp.rp or sp.rc:  # beyond the reservation: more from the pool first
            more = {g.id: t for g, t in take_grants(pool.grants, sp.rp + sp.rc, self.clock())}
            parts = _merge(parts, more)
            sp = split(parts, credit, prompt_tokens, completion_tokens, pin, pout)
            credit += cover(sp.rp, sp.rc, pin, pout, pool.credit)[2]
            sp = split(parts, credit, prompt_tokens, completion_tokens, pin, pout)
        seg = self.journal.append({"k": "S", "id": rid, "p": prompt_tokens, "c": completion_tokens, "g": parts,
                                   "cr": credit})
        held = dict(child.parts)
        for gid, _ in parts:
            pool.by_id[gid].available += held.get(gid, 0) - sp.used.get(gid, 0)  # the extra parts were in the pool
        pool.credit += child.credit - sp.money
        pool.open -= 1
        del self._children[rid]
        child.segs.append(seg)
        charge = Charge(child.prompt, child.max_tokens, tuple(parts), credit, tuple(sorted(sp.used.items())), sp.money,
                        sp.rp, sp.rc, child.mark, False, child.created)
        self._flush(Op("charge", rid, child.tenant_id, prompt_tokens, completion_tokens, child.model,
                       child.request_id, pin, pout, self.instance_id, extra=charge), child.segs, pool)
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
        pool = child.pool
        for gid, t in child.parts:
            pool.by_id[gid].available += t
        pool.credit += child.credit
        pool.open -= 1
        try:
            child.segs.append(self.journal.append({"k": "X", "id": reservation.id}))
        except LedgerError as exc:  # recovery may then charge up to one progress block: logged
            log.error("journal write failed on release", extra={"fields": {"reservation": reservation.id,
                                                                            "error": str(exc)}})
        self.journal.done(child.segs)

    # ---- write-behind --------------------------------------------------------------------------------
    def _flush(self, op: Op, segs: list[int], pool: _Pool | None) -> None:
        """Queue ``op`` for the database; queued operations go to the writer together every ``write_behind_s``
        (one transaction for many charges instead of one each; the journal already holds them)."""
        if pool is not None:
            pool.unflushed += 1
        self._queued.append((op, segs, pool))
        if self._drain_at is None:
            self._drain_at = asyncio.get_running_loop().call_later(self.options.write_behind_s, self._drain)

    def _drain(self) -> None:
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

    def _flushed(self, fut: asyncio.Future[Any], op: Op, segs: list[int], pool: _Pool | None) -> None:
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

    def _resubmit(self) -> None:
        """Send what is queued now, with the operations that failed before."""
        retry, self._retry = self._retry, []
        self.stats.retries += len(retry)
        self._queued.extend(retry)
        self._drain()

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


def _merge(parts: list[tuple[int, int]], more: dict[int, int]) -> list[tuple[int, int]]:
    out = dict(parts)
    for gid, t in more.items():
        out[gid] = out.get(gid, 0) + t
    return list(out.items())


def _as_reservation(rid: str, child: _Child) -> Reservation:
    grants = sum(t for _, t in child.parts)
    return Reservation(rid, child.tenant_id, child.model, grants, child.credit / 1e6, child.prompt, child.max_tokens,
                       child.credit, child.request_id)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("ledger background operation failed", extra={"fields": {"error": str(fut.exception())}})
