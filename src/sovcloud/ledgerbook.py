"""The ledger's bookkeeping: one batch of operations applied in one database transaction.

Pots and the balance invariant (all integers; money in micro-dollars, prices in pico-dollars per token,
so ``1 US$/Mtok = 1 micro-dollar/token = 10^6 pico-dollars/token`` and no float ever touches a balance):

* each grant ``g``: ``granted_g = available_g + reserved_g + spent_g`` (tokens);
* each tenant's credit: ``credited = available + reserved + spent`` (micro-dollars);
* ``reserved_g`` = sum of the grant parts of the tenant's *pending* reservations on ``g`` and
  ``spent_g`` = sum of the charged parts of its *settled* reservations; likewise for credits;
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

Concurrency: a batch locks the account rows of its tenants (PostgreSQL ``FOR UPDATE`` in tenant
order; SQLite ``BEGIN IMMEDIATE``), then reads grants and reservations, decides in Python and writes
back with ``executemany``: a few statements per batch, not per request. Every operation is idempotent
by reservation id, so a batch can be retried after an ambiguous commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .errors import InsufficientFunds, LedgerError
from .ledgerdb import LedgerDB

__all__ = [
    "PENDING",
    "RELEASED",
    "SETTLED",
    "Batch",
    "Op",
    "Reservation",
    "Settlement",
    "cover",
    "format_parts",
    "parse_parts",
    "price_pico",
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
        return tuple(getattr(self, n) for n in names)

    def settlement(self) -> Settlement:
        grant = sum(t for _, t in parse_parts(self.charged_parts))
        return Settlement(self.id, self.used_prompt, self.used_completion, grant, self.charged_micro / 1e6,
                          self.charged_micro, self.unbilled_tokens, bool(self.recovered))

    def reservation(self) -> Reservation:
        grant = sum(t for _, t in parse_parts(self.grant_parts))
        return Reservation(self.id, self.tenant_id, self.model, grant, self.credit_micro / 1e6, self.prompt_tokens,
                           self.max_tokens, self.credit_micro, self.request_id)


@dataclass(slots=True)
class Op:
    """One queued operation. ``kind``: reserve | settle | release | progress | recover."""

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

    # ---- load --------------------------------------------------------------------------------
    def _load(self) -> None:
        """BEGIN, lock the tenants' accounts, read their grants and the batch's reservations: one round
        trip on PostgreSQL (a pipeline; the statements still run in order, the reads after the lock)."""
        db, conn = self.db, self.conn
        tenants = sorted({op.tenant_id for op in self.ops})
        where, params = db.in_list("tenant_id", tenants)
        ids = sorted({op.rid for op in self.ops if op.kind != "reserve" or self.check_new})
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
        plan: list[tuple[_Grant, int]] = []
        for g in self.grants[tenant_id]:
            if tokens <= 0:
                break
            if g.available > 0 and (g.expires is None or g.expires > self.now):
                take = min(g.available, tokens)
                plan.append((g, take))
                tokens -= take
        return plan

    def _reserve(self, op: Op) -> Reservation:
        existing = self.res.get(op.rid)
        if existing is not None:  # a retried batch whose first commit went through
            return existing.reservation()
        acct = self.accounts[op.tenant_id]
        need = op.a + op.b
        plan = self._take_grants(op.tenant_id, need)
        from_grants = sum(t for _, t in plan)
        rest = need - from_grants
        credit = 0
        if rest:
            rp = max(0, op.a - from_grants)
            p, c, credit = cover(rp, rest - rp, op.price_in, op.price_out, acct.available)
            if p + c < rest:
                raise InsufficientFunds(self._refusal(op, from_grants, rest, rp, acct.available))
        for g, take in plan:
            g.available -= take
            g.reserved += take
            g.dirty = True
        if credit:
            acct.available -= credit
            acct.reserved += credit
            acct.dirty = True
        parts = format_parts([(g.id, t) for g, t in plan])
        r = _Res((op.rid, op.tenant_id, op.request_id, op.model, op.instance_id, PENDING, op.a, op.b, op.price_in,
                  op.price_out, parts, credit, 0, 0, 0, "", 0, 0, 0, self.now, None), new=True)
        self.res[op.rid] = r
        return Reservation(op.rid, op.tenant_id, op.model, from_grants, credit / 1e6, op.a, op.b, credit,
                           op.request_id)

    def _refusal(self, op: Op, from_grants: int, rest: int, rp: int, available: int) -> str:
        head = (f"tenant {op.tenant_id}: request needs {op.a + op.b} tokens at worst ({op.a} prompt + "
                f"{op.b} max_tokens); its grants cover {from_grants}")
        if op.price_in < 0 or op.price_out < 0:
            return (f"{head} and it has no price for model {op.model!r} to pay the other {rest} from credits; "
                    "lower max_tokens, grant tokens (`sovcloud tenants grant`) or set a --price")
        cost = -(-(rp * op.price_in + (rest - rp) * op.price_out) // _PICO_PER_MICRO)
        return (f"{head}, the other {rest} cost US${cost / 1e6:.6f} but its credit is US${available / 1e6:.6f}; "
                f"lower max_tokens or add credit (`sovcloud tenants credit {op.tenant_id} USD`)")

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
        left = prompt + completion
        acct = self.accounts[r.tenant_id]
        charged: dict[int, int] = {}
        for gid, take in parse_parts(r.grant_parts):  # 1. the reserved grant tokens
            g = self.grant_by_id[gid]
            use = min(take, left)
            left -= use
            g.reserved -= take
            g.spent += use
            g.available += take - use
            g.dirty = True
            if use:
                charged[gid] = charged.get(gid, 0) + use
        rp = max(0, left - completion)  # the grants covered prompt tokens first
        rc = left - rp
        p, c, money = cover(rp, rc, r.price_in, r.price_out, r.credit_micro)  # 2. the reserved credit
        acct.reserved -= r.credit_micro
        acct.available += r.credit_micro - money
        rp, rc = rp - p, rc - c
        if rp or rc:  # 3. usage beyond the reservation: available grants, then credit, then unbilled
            for g, take in self._take_grants(r.tenant_id, rp + rc):
                g.available -= take
                g.spent += take
                g.dirty = True
                charged[g.id] = charged.get(g.id, 0) + take
                used_p = min(rp, take)
                rp, rc = rp - used_p, rc - (take - used_p)
            p, c, extra = cover(rp, rc, r.price_in, r.price_out, acct.available)
            acct.available -= extra
            money += extra
            rp, rc = rp - p, rc - c
        unbilled = rp + rc
        acct.spent += money
        acct.unbilled += unbilled
        acct.dirty = True
        r.state, r.used_prompt, r.used_completion = SETTLED, prompt, completion
        r.charged_parts = format_parts(sorted(charged.items()))
        r.charged_micro, r.unbilled_tokens, r.recovered, r.settled_at = money, unbilled, int(recovered), self.now
        r.dirty = True
        return r.settlement()

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
