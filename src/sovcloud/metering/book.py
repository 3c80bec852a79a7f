"""The ledger's bookkeeping: one batch of operations applied in one database transaction.

Pots and the balance invariant (all integers; money in micro-dollars, prices in pico-dollars per token,
see :mod:`sovcloud.metering.pricing`):

* each grant ``g``: ``granted_g = available_g + reserved_g + spent_g`` (tokens);
* each tenant's credit: ``credited = available + reserved + spent`` (micro-dollars);
* ``reserved_g`` = sum of the grant parts of the tenant's *pending* reservations and *open* leases on ``g``
  and ``spent_g`` = sum of the charged parts of its *settled* reservations; likewise for credits;
* the journal (``ledger_entries``) sums to ``granted`` and ``credited``.
  :func:`~sovcloud.metering.audit.read_audit` checks all of it.

Every operation moves amounts between the columns of one equation, never in or out of it, so the
invariant holds after every transaction. ``available`` never goes negative: a reservation is refused
(:class:`~sovcloud.errors.InsufficientFunds`) unless it fits (:func:`~sovcloud.metering.pricing.hold`); a
settlement (:func:`~sovcloud.metering.pricing.split`) above the reservation draws on ``available`` only up
to what is there and records the rest as ``unbilled_tokens``. The unused rest of a reservation returns to
``available`` (tokens to the grant they came from, even if it has expired since).

Leases (:mod:`sovcloud.metering.lease`): ``lease`` moves grant tokens and credit from ``available`` to
``reserved`` on a lease row of one gateway instance; ``charge`` records a request that instance settled
in memory (its used tokens and money move from the instance's leases to ``spent``, its settled row is
inserted); ``close`` returns what a lease still holds to ``available``.

A batch reads and locks its rows (:class:`~sovcloud.metering.rows.Rows`), decides in Python, one
operation after another, and writes the changes back in one commit. An operation refused with a
:class:`~sovcloud.errors.LedgerError` is that operation's result; the others still apply. Every
operation is idempotent by reservation (or lease) id, so a batch can be retried after an ambiguous commit.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sovcloud.errors import InsufficientFunds, LedgerError
from sovcloud.metering.db import LedgerDB
from sovcloud.metering.pricing import cover, hold, refusal, split, take_grants
from sovcloud.metering.records import (
    PENDING,
    RELEASED,
    SETTLED,
    Charge,
    LeaseAsk,
    LeaseGrant,
    Op,
    Reservation,
    Settlement,
    format_parts,
    parse_parts,
)
from sovcloud.metering.rows import GrantRow, LeaseRow, ReservationRow, Rows

# Reservation and Settlement are the batch's results (and imported from here by the gateway)
__all__ = ["Batch", "Reservation", "Settlement"]


class Batch:
    """Apply ``ops`` in one transaction on ``conn``; returns one result (or exception) per op, in order."""

    def __init__(self, db: LedgerDB, conn: Any, ops: list[Op], *, check_new: bool = False,
                 now: float | None = None) -> None:
        self.db, self.conn, self.ops, self.check_new = db, conn, ops, check_new
        self.now = time.time() if now is None else now
        self.rows = Rows()

    def run(self) -> list[Any]:
        """Begin, load, decide, write, commit; the caller rolls back on an exception."""
        self.rows.load(self.db, self.conn, self.ops, check_new=self.check_new)
        out: list[Any] = []
        for op in self.ops:
            try:
                out.append(getattr(self, "_" + op.kind)(op))
            except LedgerError as exc:
                out.append(exc)
        self.rows.write(self.db, self.conn)
        return out

    # ---- reservations in the database ------------------------------------------------------------
    def _take_grants(self, tenant_id: str, tokens: int) -> list[tuple[GrantRow, int]]:
        return take_grants(self.rows.grants[tenant_id], tokens, self.now)

    def _reserve(self, op: Op) -> Reservation:
        rows = self.rows
        existing = rows.res.get(op.rid)
        if existing is not None:  # a retried batch whose first commit went through
            return existing.reservation()
        acct = rows.accounts[op.tenant_id]
        h = hold(rows.grants[op.tenant_id], acct.available, op.a, op.b, op.price_in, op.price_out, self.now)
        if not h.ok:
            raise InsufficientFunds(refusal(op.tenant_id, op.model, op.a, op.b, h, op.price_in, op.price_out,
                                            acct.available))
        for g, take in h.plan:
            g.available -= take
            g.reserved += take
            g.dirty = True
        if h.credit:
            acct.available -= h.credit
            acct.reserved += h.credit
            acct.dirty = True
        parts = format_parts([(g.id, t) for g, t in h.plan])
        r = ReservationRow((op.rid, op.tenant_id, op.request_id, op.model, op.instance_id, PENDING, op.a, op.b,
                            op.price_in, op.price_out, parts, h.credit, 0, 0, 0, "", 0, 0, 0, self.now, None),
                           new=True)
        rows.res[op.rid] = r
        return Reservation(op.rid, op.tenant_id, op.model, h.from_grants, h.credit / 1e6, op.a, op.b, h.credit,
                           op.request_id)

    def _row(self, op: Op) -> ReservationRow:
        r = self.rows.res.get(op.rid)
        if r is None:
            raise LedgerError(f"reservation {op.rid} of tenant {op.tenant_id} is not in the ledger")
        if r.tenant_id != op.tenant_id:
            raise LedgerError(f"reservation {op.rid} belongs to tenant {r.tenant_id}, not {op.tenant_id}")
        return r

    def _settle(self, op: Op, *, recovered: bool = False) -> Settlement:
        r = self._row(op)
        if r.state == SETTLED:
            return r.settlement()
        if r.state == RELEASED:
            raise LedgerError(f"reservation {r.id} was released (nothing delivered); it cannot be settled")
        prompt, completion = op.a, op.b
        acct = self.rows.accounts[r.tenant_id]
        parts = parse_parts(r.grant_parts)
        sp = split(parts, r.credit_micro, prompt, completion, r.price_in, r.price_out)
        for gid, take in parts:  # 1. the reserved grant tokens: the used ones are spent, the rest returns
            g = self.rows.grant_by_id[gid]
            use = sp.used.get(gid, 0)
            g.reserved -= take
            g.spent += use
            g.available += take - use
            g.dirty = True
        acct.reserved -= r.credit_micro  # 2. the reserved credit likewise
        acct.available += r.credit_micro - sp.money
        charged = dict(sp.used)
        extra, unbilled = self._beyond(r.tenant_id, sp.rp, sp.rc, r.price_in, r.price_out, charged)
        acct.spent += sp.money + extra
        acct.unbilled += unbilled
        acct.dirty = True
        r.state, r.used_prompt, r.used_completion = SETTLED, prompt, completion
        r.charged_parts = format_parts(sorted(charged.items()))
        r.charged_micro, r.unbilled_tokens = sp.money + extra, unbilled
        r.recovered, r.settled_at = int(recovered), self.now
        r.dirty = True
        return r.settlement()

    def _beyond(self, tenant_id: str, rp: int, rc: int, pin: int, pout: int,
                charged: dict[int, int]) -> tuple[int, int]:
        """Usage beyond a reservation: available grants, then credit, then recorded as unbilled. Returns
        (micro-US$ charged, unbilled tokens); grant tokens taken are added to ``charged``."""
        if not (rp or rc):
            return 0, 0
        for g, take in self._take_grants(tenant_id, rp + rc):
            g.available -= take
            g.spent += take
            g.dirty = True
            charged[g.id] = charged.get(g.id, 0) + take
            used_p = min(rp, take)
            rp, rc = rp - used_p, rc - (take - used_p)
        acct = self.rows.accounts[tenant_id]
        p, c, extra = cover(rp, rc, pin, pout, acct.available)
        acct.available -= extra
        acct.dirty = True
        return extra, rp - p + rc - c

    def _release(self, op: Op) -> None:
        r = self._row(op)
        if r.state != PENDING:
            return
        for gid, take in parse_parts(r.grant_parts):
            g = self.rows.grant_by_id[gid]
            g.reserved -= take
            g.available += take
            g.dirty = True
        acct = self.rows.accounts[r.tenant_id]
        acct.reserved -= r.credit_micro
        acct.available += r.credit_micro
        acct.dirty = True
        r.state, r.settled_at, r.dirty = RELEASED, self.now, True

    def _progress(self, op: Op) -> None:
        r = self._row(op)
        if r.state == PENDING and op.a > r.progress:
            r.progress, r.dirty = op.a, True

    def _recover(self, op: Op) -> Settlement | None:
        """A reservation left pending by a crash: charge the prompt and the durable progress mark, or
        release it when no token was marked as delivered."""
        r = self._row(op)
        if r.state != PENDING:
            return None
        if r.progress <= 0:
            self._release(op)
            return None
        op.a, op.b = r.prompt_tokens, min(r.progress, r.max_tokens)
        return self._settle(op, recovered=True)

    # ---- leases (requests admitted in memory by one instance; see sovcloud.metering.lease) ----------
    def _open_leases(self, tenant_id: str, instance_id: str) -> list[LeaseRow]:
        return [x for x in self.rows.leases.values() if x.tenant_id == tenant_id and x.instance_id == instance_id
                and x.state == PENDING]

    def _lease(self, op: Op) -> LeaseGrant:
        """Move grant tokens and credit to a new lease of ``op.instance_id`` (idempotent by lease id)."""
        rows = self.rows
        existing = rows.leases.get(op.rid)
        if existing is not None:  # a retried batch whose first commit went through
            return LeaseGrant(op.rid, tuple((g, t, rows.grant_by_id[g].expires) for g, t in
                                            parse_parts(existing.taken_parts)), existing.taken_micro)
        ask: LeaseAsk = op.extra
        grants = rows.grants[op.tenant_id]
        live = sum(g.available for g in grants if g.expires is None or g.expires > self.now)
        want = min(live, max(ask.tokens_min, min(ask.tokens, math.ceil(ask.fraction * live))))
        plan = take_grants(grants, want, self.now)
        for g, take in plan:
            g.available -= take
            g.reserved += take
            g.dirty = True
        acct = rows.accounts[op.tenant_id]
        micro = min(acct.available, max(ask.micro_min, min(ask.micro, math.ceil(ask.fraction * acct.available))))
        if micro:
            acct.available -= micro
            acct.reserved += micro
            acct.dirty = True
        if not plan and not micro:
            return LeaseGrant(op.rid, (), 0)  # nothing to lease: no row
        parts = format_parts([(g.id, t) for g, t in plan])
        rows.leases[op.rid] = LeaseRow((op.rid, op.tenant_id, op.instance_id, PENDING, parts, micro, parts, micro,
                                        self.now, None), new=True)
        return LeaseGrant(op.rid, tuple((g.id, t, g.expires) for g, t in plan), micro)

    def _close(self, op: Op) -> None:
        """Return everything the open leases of (``op.instance_id``, tenant) still hold and close them: those
        whose ids ``op.extra`` names, or all of them when it is None (recovery)."""
        acct = self.rows.accounts[op.tenant_id]
        for lease in self._open_leases(op.tenant_id, op.instance_id):
            if op.extra is not None and lease.id not in op.extra:
                continue
            for gid, t in lease.held.items():
                g = self.rows.grant_by_id[gid]
                g.reserved -= t
                g.available += t
                g.dirty = True
            if lease.credit:
                acct.reserved -= lease.credit
                acct.available += lease.credit
                acct.dirty = True
            lease.held, lease.credit = {}, 0
            lease.state, lease.closed_at, lease.dirty = RELEASED, self.now, True

    def _charge(self, op: Op) -> Settlement:
        """Record a request settled in memory: its charge moves from the instance's leases to spent, its
        usage beyond them is covered like a settlement's (grants, credit, else unbilled). Idempotent."""
        existing = self.rows.res.get(op.rid)
        if existing is not None:
            return existing.settlement()
        ch: Charge = op.extra
        leases = self._open_leases(op.tenant_id, op.instance_id)
        self._draw_leases(op, ch, leases)
        acct = self.rows.accounts[op.tenant_id]
        acct.reserved -= ch.money
        charged = dict(ch.used)
        extra, unbilled = self._beyond(op.tenant_id, ch.rp, ch.rc, op.price_in, op.price_out, charged)
        acct.spent += ch.money + extra
        acct.unbilled += unbilled
        acct.dirty = True
        for lease in leases:
            lease.held = {g: t for g, t in lease.held.items() if t}
        r = ReservationRow((op.rid, op.tenant_id, op.request_id, op.model, op.instance_id, SETTLED, ch.prompt_tokens,
                            ch.max_tokens, op.price_in, op.price_out, format_parts(list(ch.parts)), ch.credit,
                            ch.progress, op.a, op.b, format_parts(sorted(charged.items())), ch.money + extra,
                            unbilled, int(ch.recovered), ch.created_at, self.now), new=True)
        self.rows.res[op.rid] = r
        # what r.settlement() would parse back out of the row, from the numbers at hand
        return Settlement(op.rid, op.a, op.b, sum(charged.values()), (ch.money + extra) / 1e6, ch.money + extra,
                          unbilled, bool(ch.recovered))

    def _draw_leases(self, op: Op, ch: Charge, leases: list[LeaseRow]) -> None:
        """Move the charge's used grant tokens from the instance's ``leases`` (oldest first) to spent and take
        its money off their credit; a LedgerError, changing nothing, when the leases hold less than it used."""
        held: dict[int, int] = {}
        for lease in leases:
            for gid, t in lease.held.items():
                held[gid] = held.get(gid, 0) + t
        short = [f"grant {g}: {t} > {held.get(g, 0)}" for g, t in ch.used if t > held.get(g, 0)]
        credit = sum(lease.credit for lease in leases)
        if short or ch.money > credit:
            raise LedgerError(f"charge {op.rid} of tenant {op.tenant_id}: the leases of instance {op.instance_id!r} "
                              f"hold less than it used ({', '.join(short) or f'credit {ch.money} > {credit}'})")
        for gid, t in ch.used:
            g = self.rows.grant_by_id[gid]
            g.reserved -= t
            g.spent += t
            g.dirty = True
            for lease in leases:
                take = min(t, lease.held.get(gid, 0))
                if take:
                    lease.held[gid] -= take
                    lease.dirty = True
                    t -= take
        money = ch.money
        for lease in leases:
            take = min(money, lease.credit)
            lease.credit -= take
            lease.dirty = lease.dirty or take > 0
            money -= take
