"""The ledger's bookkeeping: one batch of operations applied in one database transaction.

Pots and the balance invariant (all integers; money in micro-dollars, prices in pico-dollars per token,
so ``1 US$/Mtok = 1 micro-dollar/token = 10^6 pico-dollars/token`` and no float ever touches a balance):

* each grant ``g``: ``granted_g = available_g + reserved_g + spent_g`` (tokens);
* each tenant's credit: ``credited = available + reserved + spent`` (micro-dollars);
* ``reserved_g`` = sum of the grant parts of the tenant's *pending* reservations and *open* leases on ``g``
  and ``spent_g`` = sum of the charged parts of its *settled* reservations; likewise for credits;
* the journal (``ledger_entries``) sums to ``granted`` and ``credited``. :func:`audit` checks all of it.

Every operation moves amounts between the columns of one equation, never in or out of it, so the
invariant holds after every transaction. ``available`` never goes negative: a reservation is refused
(:class:`~sovcloud.errors.InsufficientFunds`) unless it fits; a settlement above the reservation draws on
``available`` only up to what is there and records the rest as ``unbilled_tokens``.

Reserve: the worst case ``prompt + max_tokens`` tokens is covered by non-expired grants first (earliest
expiry first, then oldest), the remainder by credits at the model's price (prompt tokens at the input
price, then ``max_tokens`` at the output price; grants cover prompt tokens first). Settle: the actual
tokens use the reservation's grant parts first, then its credit; the unused rest returns to
``available`` (tokens to the grant they came from, even if it has expired since).

Leases (:mod:`sovcloud.ledgerlease`): ``lease`` moves grant tokens and credit from ``available`` to
``reserved`` on a lease row of one gateway instance; ``charge`` records a request that instance settled
in memory (its used tokens and money move from the instance's leases to ``spent``, its settled row is
inserted); ``close`` returns what a lease still holds to ``available``. The pure rules :func:`hold` (cover a
worst case) and :func:`split` (charge a usage to a reservation's parts) are the same in memory and here.

Concurrency: a batch locks the account rows of its tenants (PostgreSQL ``FOR UPDATE`` in tenant
order; SQLite ``BEGIN IMMEDIATE``), then reads grants and reservations, decides in Python and writes
back with ``executemany``: a few statements per batch, not per request. Every operation is idempotent
by reservation id, so a batch can be retried after an ambiguous commit.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sovcloud.errors import InsufficientFunds, LedgerError
from sovcloud.metering.db import LedgerDB

__all__ = [
    "PENDING",
    "RELEASED",
    "SETTLED",
    "Batch",
    "Charge",
    "GrantLike",
    "Hold",
    "LeaseAsk",
    "LeaseGrant",
    "Op",
    "Reservation",
    "Settlement",
    "Split",
    "cover",
    "format_parts",
    "hold",
    "parse_parts",
    "price_pico",
    "refusal",
    "split",
    "take_grants",
]

PENDING, SETTLED, RELEASED = 0, 1, 2
_PICO_PER_MICRO = 1_000_000


@dataclass(frozen=True)
class Reservation:
    """Worst-case cost held for one request until it is settled or released."""

    id: str
    tenant_id: str
    model: str
    grant_tokens: int
    credit_usd: float
    prompt_tokens: int
    max_tokens: int
    credit_micro: int = 0
    request_id: str = ""


@dataclass(frozen=True)
class Settlement:
    """What one request was charged: ``grant_tokens`` from grants and ``credit_usd`` from credits."""

    reservation_id: str
    prompt_tokens: int
    completion_tokens: int
    grant_tokens: int
    credit_usd: float
    credit_micro: int = 0
    unbilled_tokens: int = 0
    recovered: bool = False


def price_pico(usd_per_mtok: float) -> int:
    """US$ per million tokens as integer pico-dollars per token."""
    return round(usd_per_mtok * _PICO_PER_MICRO)


def cover(prompt: int, completion: int, pin: int, pout: int, budget: int) -> tuple[int, int, int]:
    """Tokens a budget of ``budget`` micro-dollars pays for, prompt first: (prompt, completion, micro).

    ``pin``/``pout`` are pico-dollars per token (negative: no price, nothing is covered). The charge is
    the exact cost rounded up to the micro-dollar and never exceeds ``budget``.
    """
    if pin < 0 or pout < 0 or (prompt == 0 and completion == 0):
        return 0, 0, 0
    full = prompt * pin + completion * pout
    money = budget * _PICO_PER_MICRO
    if full <= money:
        return prompt, completion, -(-full // _PICO_PER_MICRO)
    p = prompt if pin == 0 else min(prompt, money // pin)
    money -= p * pin
    c = completion if pout == 0 else min(completion, money // pout)
    return p, c, -(-(p * pin + c * pout) // _PICO_PER_MICRO)


def parse_parts(text: str) -> list[tuple[int, int]]:
    if not text:
        return []
    return [(int(g), int(t)) for g, _, t in (p.partition(":") for p in text.split(","))]


def format_parts(parts: list[tuple[int, int]]) -> str:
    return ",".join(f"{g}:{t}" for g, t in parts if t)


class GrantLike(Protocol):
    """What the decisions read of a grant pot: its id, expiry and tokens ``available``."""

    id: int
    expires: int | None
    available: int


G = TypeVar("G", bound=GrantLike)


def take_grants(grants: Sequence[G], tokens: int, now: float) -> list[tuple[G, int]]:
    """The tokens to take from ``grants`` (already in spending order) for ``tokens``: non-expired only."""
    plan: list[tuple[G, int]] = []
    for g in grants:
        if tokens <= 0:
            break
        if g.available > 0 and (g.expires is None or g.expires > now):
            take = min(g.available, tokens)
            plan.append((g, take))
            tokens -= take
    return plan


@dataclass(slots=True)
class Hold(Generic[G]):
    """How a worst case ``prompt + max_tokens`` would be covered: ``plan`` from grants, ``credit`` micro-US$.

    ``ok`` is False when grants and ``credit_available`` together fall short; ``from_grants``, ``rest``
    (tokens left for credits) and ``rp`` (of which prompt tokens) then explain the refusal."""

    plan: list[tuple[G, int]]
    credit: int
    from_grants: int
    rest: int
    rp: int
    ok: bool


def hold(grants: Sequence[G], credit_available: int, prompt: int, max_tokens: int, pin: int, pout: int,
         now: float) -> Hold[G]:
    """Cover the worst case by grants first (prompt tokens first), the rest by credit at the model price."""
    need = prompt + max_tokens
    plan = take_grants(grants, need, now)
    from_grants = sum(t for _, t in plan)
    rest = need - from_grants
    credit, rp, ok = 0, 0, True
    if rest:
        rp = max(0, prompt - from_grants)
        p, c, credit = cover(rp, rest - rp, pin, pout, credit_available)
        ok = p + c >= rest
    return Hold(plan, credit, from_grants, rest, rp, ok)


@dataclass(slots=True)
class Split:
    """A settlement against one reservation's parts: per grant the tokens ``used`` (charged) and the
    rest returned, the credit ``money`` charged (the rest of ``credit_micro`` returned), and the usage
    beyond the reservation (``rp`` prompt and ``rc`` completion tokens) still to be covered."""

    used: dict[int, int]
    money: int
    rp: int
    rc: int


def split(parts: list[tuple[int, int]], credit_micro: int, prompt: int, completion: int, pin: int,
          pout: int) -> Split:
    """Charge ``prompt + completion`` tokens to a reservation's grant ``parts`` first, then its credit."""
    left = prompt + completion
    used: dict[int, int] = {}
    for gid, take in parts:
        use = min(take, left)
        left -= use
        if use:
            used[gid] = used.get(gid, 0) + use
    rp = max(0, left - completion)  # the grants covered prompt tokens first
    rc = left - rp
    p, c, money = cover(rp, rc, pin, pout, credit_micro)
    return Split(used, money, rp - p, rc - c)


def refusal(tenant_id: str, model: str, prompt: int, max_tokens: int, h: Hold[Any], pin: int, pout: int,
            available: int) -> str:
    """Why a worst case cannot be covered, and what to do (the InsufficientFunds message)."""
    head = (f"tenant {tenant_id}: request needs {prompt + max_tokens} tokens at worst ({prompt} prompt + "
            f"{max_tokens} max_tokens); its grants cover {h.from_grants}")
    if pin < 0 or pout < 0:
        return (f"{head} and it has no price for model {model!r} to pay the other {h.rest} from credits; "
                "lower max_tokens, grant tokens (`sovcloud tenants grant`) or set a --price")
    cost = -(-(h.rp * pin + (h.rest - h.rp) * pout) // _PICO_PER_MICRO)
    return (f"{head}, the other {h.rest} cost US${cost / 1e6:.6f} but its credit is US${available / 1e6:.6f}; "
            f"lower max_tokens or add credit (`sovcloud tenants credit {tenant_id} USD`)")


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    """What a lease asks for: grant tokens and credit micro-US$, each ``max(min, min(target, fraction x
    available))`` capped at what is available (``fraction`` leaves the rest to other instances)."""

    tokens_min: int
    tokens: int
    micro_min: int
    micro: int
    fraction: float


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What a lease got: ``(grant id, tokens, expires_at)`` per grant, and credit micro-US$."""

    lease_id: str
    grants: tuple[tuple[int, int, int | None], ...]
    micro: int


@dataclass(frozen=True, slots=True)
class Charge:
    """A request admitted and settled in memory against its instance's leases, to be recorded:
    ``parts``/``credit`` it held (grant tokens, micro-US$), the ``used`` grant tokens and ``money`` charged
    from them, and its usage beyond what the lease could cover (``rp`` prompt, ``rc`` completion tokens)."""

    prompt_tokens: int  # the reservation's estimate
    max_tokens: int
    parts: tuple[tuple[int, int], ...]
    credit: int
    used: tuple[tuple[int, int], ...]
    money: int
    rp: int
    rc: int
    progress: int
    recovered: bool
    created_at: float


class _Account:
    __slots__ = ("available", "dirty", "exists", "reserved", "spent", "tenant_id", "unbilled")

    def __init__(self, tenant_id: str, available: int = 0, reserved: int = 0, spent: int = 0, unbilled: int = 0,
                 exists: bool = False) -> None:
        self.tenant_id, self.available, self.reserved, self.spent = tenant_id, available, reserved, spent
        self.unbilled, self.exists, self.dirty = unbilled, exists, False


class _Grant:
    __slots__ = ("available", "dirty", "expires", "id", "reserved", "spent")

    def __init__(self, gid: int, available: int, reserved: int, spent: int, expires: int | None) -> None:
        self.id, self.available, self.reserved, self.spent, self.expires = gid, available, reserved, spent, expires
        self.dirty = False


_RES_COLS = ("id", "tenant_id", "request_id", "model", "instance_id", "state", "prompt_tokens", "max_tokens",
             "price_in", "price_out", "grant_parts", "credit_micro", "progress", "used_prompt", "used_completion",
             "charged_parts", "charged_micro", "unbilled_tokens", "recovered", "created_at", "settled_at")
_RES_MUTABLE = ("state", "progress", "used_prompt", "used_completion", "charged_parts", "charged_micro",
                "unbilled_tokens", "recovered", "settled_at")


class _Res:
    """A reservation row, mutable while the batch decides."""

    __slots__ = ("dirty", "new", *_RES_COLS)
    id: str
    tenant_id: str
    request_id: str
    model: str
    state: int
    prompt_tokens: int
    max_tokens: int
    price_in: int
    price_out: int
    grant_parts: str
    credit_micro: int
    progress: int
    used_prompt: int
    used_completion: int
    charged_parts: str
    charged_micro: int
    unbilled_tokens: int
    recovered: int
    settled_at: float | None

    def __init__(self, values: tuple[Any, ...] | list[Any], new: bool) -> None:
        for name, value in zip(_RES_COLS, values, strict=True):
            setattr(self, name, value)
        self.new, self.dirty = new, False

    def row(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(_ROW_GETTERS[names](self))

    def settlement(self) -> Settlement:
        grant = sum(t for _, t in parse_parts(self.charged_parts))
        return Settlement(self.id, self.used_prompt, self.used_completion, grant, self.charged_micro / 1e6,
                          self.charged_micro, self.unbilled_tokens, bool(self.recovered))

    def reservation(self) -> Reservation:
        grant = sum(t for _, t in parse_parts(self.grant_parts))
        return Reservation(self.id, self.tenant_id, self.model, grant, self.credit_micro / 1e6, self.prompt_tokens,
                           self.max_tokens, self.credit_micro, self.request_id)


_LEASE_COLS = ("id", "tenant_id", "instance_id", "state", "taken_parts", "taken_micro", "grant_parts",
               "credit_micro", "created_at", "closed_at")
_LEASE_MUTABLE = ("state", "grant_parts", "credit_micro", "closed_at")
# rows as tuples in the order of their columns, by C-level attribute look-ups (the writer builds one per charge)
_ROW_GETTERS: dict[tuple[str, ...], Any] = {names: operator.attrgetter(*names) for names in (_RES_COLS, _RES_MUTABLE)}


class _Lease:
    """A lease row, mutable while the batch decides (``held``: grant id -> tokens still held)."""

    __slots__ = ("closed_at", "created_at", "credit", "dirty", "held", "id", "instance_id", "new", "state",
                 "taken_micro", "taken_parts", "tenant_id")

    def __init__(self, row: tuple[Any, ...] | list[Any], new: bool) -> None:
        (self.id, self.tenant_id, self.instance_id, self.state, self.taken_parts, self.taken_micro, parts,
         self.credit, self.created_at, self.closed_at) = row
        self.held: dict[int, int] = dict(parse_parts(parts))
        self.new, self.dirty = new, False

    def row(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        values = {"grant_parts": format_parts(list(self.held.items())), "credit_micro": self.credit}
        return tuple(values[n] if n in values else getattr(self, n) for n in names)


@dataclass(slots=True)
class Op:
    """One queued operation. ``kind``: reserve | settle | release | progress | recover (a reservation in the
    database), or lease | charge | close (requests admitted in memory against a lease, sovcloud.ledgerlease)."""

    kind: str
    rid: str
    tenant_id: str
    a: int = 0  # reserve: prompt tokens; settle: prompt tokens; progress: mark
    b: int = 0  # reserve: max_tokens; settle: completion tokens
    model: str = ""
    request_id: str = ""
    price_in: int = -1
    price_out: int = -1
    instance_id: str = ""
    future: Any = None
    extra: Any = None  # lease: LeaseAsk; charge: Charge


class Batch:
    """Apply ``ops`` in one transaction on ``conn``; returns one result (or exception) per op, in order."""

    def __init__(self, db: LedgerDB, conn: Any, ops: list[Op], *, check_new: bool = False,
                 now: float | None = None) -> None:
        self.db, self.conn, self.ops, self.check_new = db, conn, ops, check_new
        self.now = time.time() if now is None else now
        self.accounts: dict[str, _Account] = {}
        self.grants: dict[str, list[_Grant]] = {}
        self.grant_by_id: dict[int, _Grant] = {}
        self.res: dict[str, _Res] = {}
        self.leases: dict[str, _Lease] = {}  # open leases of the batch's tenants, oldest first

    # ---- load --------------------------------------------------------------------------------
    def _load(self) -> None:
        """BEGIN, lock the tenants' accounts, read their grants and the batch's reservations: one round
        trip on PostgreSQL (a pipeline; the statements still run in order, the reads after the lock)."""
        db, conn = self.db, self.conn
        tenants = sorted({op.tenant_id for op in self.ops})
        where, params = db.in_list("tenant_id", tenants)
        ids = sorted({op.rid for op in self.ops if op.kind not in ("reserve", "lease", "close") or self.check_new})
        want_leases = any(op.kind in ("lease", "charge", "close") for op in self.ops)
        with db.pipeline(conn):
            db.begin(conn)
            accounts = conn.execute(f"SELECT tenant_id, credit_available, credit_reserved, credit_spent, "
                                    f"unbilled_tokens FROM ledger_accounts WHERE {where} "
                                    f"ORDER BY tenant_id{db.for_update}", params)
            if db.kind == "sqlite":  # sqlite3 cursors are lazy: read before the next execute
                accounts = accounts.fetchall()
            grants = conn.execute(f"SELECT id, tenant_id, available, reserved, spent, expires_at FROM ledger_grants "
                                  f"WHERE {where} AND (available > 0 OR reserved > 0)", params)
            if db.kind == "sqlite":
                grants = grants.fetchall()
            rows: Any = ()
            if ids:
                where_id, p = db.in_list("id", ids)
                rows = conn.execute(f"SELECT {', '.join(_RES_COLS)} FROM ledger_reservations WHERE {where_id}", p)
                if db.kind == "sqlite":
                    rows = rows.fetchall()
            leases: Any = ()
            if want_leases:
                leases = conn.execute(f"SELECT {', '.join(_LEASE_COLS)} FROM ledger_leases WHERE {where} AND state=0 "
                                      "ORDER BY created_at, id", params)
        for row in accounts:
            self.accounts[row[0]] = _Account(row[0], row[1], row[2], row[3], row[4], exists=True)
        for t in tenants:
            self.accounts.setdefault(t, _Account(t))
            self.grants[t] = []
        for gid, tenant, available, reserved, spent, expires in grants:
            g = _Grant(gid, available, reserved, spent, expires)
            self.grants[tenant].append(g)
            self.grant_by_id[gid] = g
        for gs in self.grants.values():
            gs.sort(key=lambda g: (g.expires is None, g.expires or 0, g.id))
        for row in rows:
            self.res[row[0]] = _Res(row, new=False)
        for row in leases:
            self.leases[row[0]] = _Lease(row, new=False)

    # ---- write -------------------------------------------------------------------------------
    def _write(self) -> None:
        """The batch's changes, then COMMIT: one round trip on PostgreSQL."""
        db, conn = self.db, self.conn
        with db.pipeline(conn):
            cur = conn.cursor()
            self._write_rows(cur)
            cur.close()
            db.commit(conn)

    def _write_rows(self, cur: Any) -> None:
        db = self.db
        grants = [(g.available, g.reserved, g.spent, g.id) for g in self.grant_by_id.values() if g.dirty]
        if grants:
            db.bulk_update(cur, "ledger_grants", "id", ("available", "reserved", "spent"), grants)
        upd = [(a.available, a.reserved, a.spent, a.unbilled, a.tenant_id)
               for a in self.accounts.values() if a.dirty and a.exists]
        if upd:
            db.bulk_update(cur, "ledger_accounts", "tenant_id",
                           ("credit_available", "credit_reserved", "credit_spent", "unbilled_tokens"), upd)
        ins = [(a.tenant_id, a.available + a.reserved + a.spent, a.available, a.reserved, a.spent, a.unbilled)
               for a in self.accounts.values() if a.dirty and not a.exists]
        if ins:
            db.bulk_insert(cur, "ledger_accounts", ("tenant_id", "credited", "credit_available", "credit_reserved",
                                                    "credit_spent", "unbilled_tokens"), ins)
        new = [r.row(_RES_COLS) for r in self.res.values() if r.new]
        if new:
            db.bulk_insert(cur, "ledger_reservations", _RES_COLS, new)
        changed = [(*r.row(_RES_MUTABLE), r.id) for r in self.res.values() if r.dirty and not r.new]
        if changed:
            db.bulk_update(cur, "ledger_reservations", "id", _RES_MUTABLE, changed)
        new_leases = [lease.row(_LEASE_COLS) for lease in self.leases.values() if lease.new]
        if new_leases:
            db.bulk_insert(cur, "ledger_leases", _LEASE_COLS, new_leases)
        leases = [(*lease.row(_LEASE_MUTABLE), lease.id) for lease in self.leases.values()
                  if lease.dirty and not lease.new]
        if leases:
            db.bulk_update(cur, "ledger_leases", "id", _LEASE_MUTABLE, leases)

    def run(self) -> list[Any]:
        """Begin, load, decide, write, commit; the caller rolls back on an exception."""
        self._load()
        out: list[Any] = []
        for op in self.ops:
            try:
                out.append(getattr(self, "_" + op.kind)(op))
            except LedgerError as exc:
                out.append(exc)
        self._write()
        return out

    # ---- decisions ---------------------------------------------------------------------------
    def _take_grants(self, tenant_id: str, tokens: int) -> list[tuple[_Grant, int]]:
        return take_grants(self.grants[tenant_id], tokens, self.now)

    def _reserve(self, op: Op) -> Reservation:
        existing = self.res.get(op.rid)
        if existing is not None:  # a retried batch whose first commit went through
            return existing.reservation()
        acct = self.accounts[op.tenant_id]
        h = hold(self.grants[op.tenant_id], acct.available, op.a, op.b, op.price_in, op.price_out, self.now)
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
        r = _Res((op.rid, op.tenant_id, op.request_id, op.model, op.instance_id, PENDING, op.a, op.b, op.price_in,
                  op.price_out, parts, h.credit, 0, 0, 0, "", 0, 0, 0, self.now, None), new=True)
        self.res[op.rid] = r
        return Reservation(op.rid, op.tenant_id, op.model, h.from_grants, h.credit / 1e6, op.a, op.b, h.credit,
                           op.request_id)

    def _row(self, op: Op) -> _Res:
        r = self.res.get(op.rid)
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
        acct = self.accounts[r.tenant_id]
        parts = parse_parts(r.grant_parts)
        sp = split(parts, r.credit_micro, prompt, completion, r.price_in, r.price_out)
        for gid, take in parts:  # 1. the reserved grant tokens: the used ones are spent, the rest returns
            g = self.grant_by_id[gid]
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
        acct = self.accounts[tenant_id]
        p, c, extra = cover(rp, rc, pin, pout, acct.available)
        acct.available -= extra
        acct.dirty = True
        return extra, rp - p + rc - c

    def _release(self, op: Op) -> None:
        r = self._row(op)
        if r.state != PENDING:
            return
        for gid, take in parse_parts(r.grant_parts):
            g = self.grant_by_id[gid]
            g.reserved -= take
            g.available += take
            g.dirty = True
        acct = self.accounts[r.tenant_id]
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

    # ---- leases (requests admitted in memory by one instance; see sovcloud.ledgerlease) ---------------
    def _open_leases(self, tenant_id: str, instance_id: str) -> list[_Lease]:
        return [x for x in self.leases.values() if x.tenant_id == tenant_id and x.instance_id == instance_id
                and x.state == PENDING]

    def _lease(self, op: Op) -> LeaseGrant:
        """Move grant tokens and credit to a new lease of ``op.instance_id`` (idempotent by lease id)."""
        existing = self.leases.get(op.rid)
        if existing is not None:  # a retried batch whose first commit went through
            return LeaseGrant(op.rid, tuple((g, t, self.grant_by_id[g].expires) for g, t in
                                            parse_parts(existing.taken_parts)), existing.taken_micro)
        ask: LeaseAsk = op.extra
        grants = self.grants[op.tenant_id]
        live = sum(g.available for g in grants if g.expires is None or g.expires > self.now)
        want = min(live, max(ask.tokens_min, min(ask.tokens, math.ceil(ask.fraction * live))))
        plan = take_grants(grants, want, self.now)
        for g, take in plan:
            g.available -= take
            g.reserved += take
            g.dirty = True
        acct = self.accounts[op.tenant_id]
        micro = min(acct.available, max(ask.micro_min, min(ask.micro, math.ceil(ask.fraction * acct.available))))
        if micro:
            acct.available -= micro
            acct.reserved += micro
            acct.dirty = True
        if not plan and not micro:
            return LeaseGrant(op.rid, (), 0)  # nothing to lease: no row
        parts = format_parts([(g.id, t) for g, t in plan])
        self.leases[op.rid] = _Lease((op.rid, op.tenant_id, op.instance_id, PENDING, parts, micro, parts, micro,
                                      self.now, None), new=True)
        return LeaseGrant(op.rid, tuple((g.id, t, g.expires) for g, t in plan), micro)

    def _close(self, op: Op) -> None:
        """Return everything the open leases of (``op.instance_id``, tenant) still hold and close them: those
        whose ids ``op.extra`` names, or all of them when it is None (recovery)."""
        acct = self.accounts[op.tenant_id]
        for lease in self._open_leases(op.tenant_id, op.instance_id):
            if op.extra is not None and lease.id not in op.extra:
                continue
            for gid, t in lease.held.items():
                g = self.grant_by_id[gid]
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
        existing = self.res.get(op.rid)
        if existing is not None:
            return existing.settlement()
        ch: Charge = op.extra
        leases = self._open_leases(op.tenant_id, op.instance_id)
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
            g = self.grant_by_id[gid]
            g.reserved -= t
            g.spent += t
            g.dirty = True
            for lease in leases:
                take = min(t, lease.held.get(gid, 0))
                if take:
                    lease.held[gid] -= take
                    lease.dirty = True
                    t -= take
        acct = self.accounts[op.tenant_id]
        money = ch.money
        for lease in leases:
            take = min(money, lease.credit)
            lease.credit -= take
            lease.dirty = lease.dirty or take > 0
            money -= take
        acct.reserved -= ch.money
        charged = dict(ch.used)
        extra, unbilled = self._beyond(op.tenant_id, ch.rp, ch.rc, op.price_in, op.price_out, charged)
        acct.spent += ch.money + extra
        acct.unbilled += unbilled
        acct.dirty = True
        for lease in leases:
            lease.held = {g: t for g, t in lease.held.items() if t}
        r = _Res((op.rid, op.tenant_id, op.request_id, op.model, op.instance_id, SETTLED, ch.prompt_tokens,
                  ch.max_tokens, op.price_in, op.price_out, format_parts(list(ch.parts)), ch.credit, ch.progress,
                  op.a, op.b, format_parts(sorted(charged.items())), ch.money + extra, unbilled, int(ch.recovered),
                  ch.created_at, self.now), new=True)
        self.res[op.rid] = r
        # what r.settlement() would parse back out of the row, from the numbers at hand
        return Settlement(op.rid, op.a, op.b, sum(charged.values()), (ch.money + extra) / 1e6, ch.money + extra,
                          unbilled, bool(ch.recovered))
