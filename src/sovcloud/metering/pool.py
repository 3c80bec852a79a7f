"""What a leasing gateway instance holds in memory: the lease options, each tenant's pool and the requests
admitted against it.

Quantities (integers; money in micro-US$): the **pool** of a tenant on this instance holds what its leases
hold and no request has taken, ``a_g`` tokens per grant ``g`` (in spending order: earliest expiry first,
then oldest) and ``m`` micro-US$ of credit. An admitted request (a :class:`Child`) holds its ``parts``
(grant id, tokens) and ``credit`` out of the pool until it is settled or released. Per grant,
``sum of open leases' held_g = a_g + sum over open requests of parts_g + sum over charges not yet
committed of used_g`` (likewise for credit): :meth:`Pool.take` moves a reservation from the pool to its
request, :meth:`Pool.settled` and :meth:`Pool.release` move what a request does not use back.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from dataclasses import dataclass

from sovcloud.errors import LedgerValueError
from sovcloud.metering.pricing import Split, cover, split, take_grants
from sovcloud.metering.records import LeaseGrant, Reservation

__all__ = ["Child", "LeaseOptions", "LeaseStats", "Pool", "PoolGrant", "merge_parts"]


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
    """Counters of a leased ledger (for metrics): leases taken and closed, charges committed, retries."""

    leases: int = 0
    closes: int = 0
    charges: int = 0
    retries: int = 0


class PoolGrant:
    """The tokens of one grant a pool holds (``available``), with the grant's expiry."""

    __slots__ = ("available", "expires", "id")

    def __init__(self, gid: int, available: int, expires: int | None) -> None:
        self.id, self.available, self.expires = gid, available, expires

    def key(self) -> tuple[bool, int, int]:
        return self.expires is None, self.expires or 0, self.id


class Pool:
    """What one tenant's leases on this instance hold and no request has taken."""

    __slots__ = ("by_id", "credit", "dry_until", "extending", "grants", "last", "last_micro", "last_tokens", "leases",
                 "open", "unflushed", "waiting")

    def __init__(self) -> None:
        self.grants: list[PoolGrant] = []  # in spending order (earliest expiry first, then oldest)
        self.by_id: dict[int, PoolGrant] = {}
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
        """Put what a lease got into the pool (a lease that got nothing is not recorded)."""
        for gid, tokens, expires in grant.grants:
            g = self.by_id.get(gid)
            if g is None:
                g = self.by_id[gid] = PoolGrant(gid, 0, expires)
                keys = [x.key() for x in self.grants]
                self.grants.insert(bisect.bisect(keys, g.key()), g)
            g.available += tokens
        self.credit += grant.micro
        if grant.grants or grant.micro:
            self.leases.append(grant.lease_id)
            self.last_tokens, self.last_micro = sum(t for _, t, _ in grant.grants), grant.micro

    def tokens(self) -> int:
        return sum(g.available for g in self.grants)

    def low(self, refill_below: float) -> bool:
        """Below ``refill_below`` of what the last lease brought, in tokens and in credit alike."""
        if not (self.last_tokens or self.last_micro):
            return False
        return ((self.last_tokens == 0 or self.tokens() < refill_below * self.last_tokens)
                and (self.last_micro == 0 or self.credit < refill_below * self.last_micro))

    def take(self, plan: list[tuple[PoolGrant, int]], credit: int) -> None:
        """Admit a request: its grant ``plan`` and ``credit`` leave the pool."""
        for g, take in plan:
            g.available -= take
        self.credit -= credit
        self.open += 1

    def settled(self, child: Child, parts: list[tuple[int, int]], sp: Split) -> None:
        """A request settled with ``parts`` (its own and any taken from the pool since): the unused tokens
        and credit come back."""
        held = dict(child.parts)
        for gid, _ in parts:
            self.by_id[gid].available += held.get(gid, 0) - sp.used.get(gid, 0)  # the extra parts were in the pool
        self.credit += child.credit - sp.money
        self.open -= 1

    def release(self, child: Child) -> None:
        """A request released (nothing delivered): everything it held comes back."""
        for gid, t in child.parts:
            self.by_id[gid].available += t
        self.credit += child.credit
        self.open -= 1


class Child:
    """One request admitted in memory: what it holds, its prices and its journal segments."""

    __slots__ = ("created", "credit", "mark", "max_tokens", "model", "parts", "pin", "pool", "pout", "prompt",
                 "request_id", "segs", "tenant_id")

    def __init__(self, tenant_id: str, pool: Pool, model: str, request_id: str, pin: int, pout: int, prompt: int,
                 max_tokens: int, parts: list[tuple[int, int]], credit: int, created: float) -> None:
        self.tenant_id, self.pool, self.model, self.request_id = tenant_id, pool, model, request_id
        self.pin, self.pout, self.prompt, self.max_tokens = pin, pout, prompt, max_tokens
        self.parts, self.credit, self.created = parts, credit, created
        self.mark = 0
        self.segs: list[int] = []

    def usage(self, prompt: int, completion: int,
              clock: Callable[[], float]) -> tuple[list[tuple[int, int]], int, Split]:
        """The parts, credit and split that charge ``prompt + completion`` tokens: the request's own parts
        first; usage beyond them takes more grant tokens (non-expired at ``clock()``), then credit, from the
        pool (not yet moved)."""
        pool, pin, pout = self.pool, self.pin, self.pout
        parts, credit = list(self.parts), self.credit
        sp = split(parts, credit, prompt, completion, pin, pout)
        if sp.rp or sp.rc:  # beyond the reservation: more from the pool first
            more = {g.id: t for g, t in take_grants(pool.grants, sp.rp + sp.rc, clock())}
            parts = merge_parts(parts, more)
            sp = split(parts, credit, prompt, completion, pin, pout)
            credit += cover(sp.rp, sp.rc, pin, pout, pool.credit)[2]
            sp = split(parts, credit, prompt, completion, pin, pout)
        return parts, credit, sp

    def reservation(self, rid: str) -> Reservation:
        """The request as the :class:`Reservation` its caller holds."""
        grants = sum(t for _, t in self.parts)
        return Reservation(rid, self.tenant_id, self.model, grants, self.credit / 1e6, self.prompt, self.max_tokens,
                           self.credit, self.request_id)


def merge_parts(parts: list[tuple[int, int]], more: dict[int, int]) -> list[tuple[int, int]]:
    """``parts`` with the tokens of ``more`` added per grant (new grants after the existing ones)."""
    out = dict(parts)
    for gid, t in more.items():
        out[gid] = out.get(gid, 0) + t
    return list(out.items())
