"""The rows one ledger batch reads, locked, and writes back: accounts, grants, reservations and leases.

:meth:`Rows.load` begins the transaction, locks the account rows of the batch's tenants (PostgreSQL
``SELECT ... ORDER BY tenant_id FOR UPDATE``, so several instances lock in the same order; SQLite
``BEGIN IMMEDIATE``) and reads, after the lock, the tenants' grants that hold anything, the batch's
reservations and (when an operation needs them) the tenants' open leases. The batch then decides in
Python on these mutable rows, marking what it changes ``dirty`` (or ``new``), and :meth:`Rows.write` sends
the changes back with ``executemany`` (``unnest`` arrays on PostgreSQL) and commits: a few statements per
batch, not per request, and one round trip each way on PostgreSQL (a pipeline).

Grants of a tenant are kept in spending order: earliest expiry first, never-expiring last, then oldest.
"""

from __future__ import annotations

import operator
from typing import Any

from sovcloud.metering.db import LedgerDB
from sovcloud.metering.records import Op, Reservation, Settlement, format_parts, parse_parts

__all__ = [
    "LEASE_COLS",
    "LEASE_MUTABLE",
    "RES_COLS",
    "RES_MUTABLE",
    "AccountRow",
    "GrantRow",
    "LeaseRow",
    "ReservationRow",
    "Rows",
]


class AccountRow:
    """A tenant's credit pot (micro-US$) and unbilled tokens; ``exists`` False: inserted on write."""

    __slots__ = ("available", "dirty", "exists", "reserved", "spent", "tenant_id", "unbilled")

    def __init__(self, tenant_id: str, available: int = 0, reserved: int = 0, spent: int = 0, unbilled: int = 0,
                 exists: bool = False) -> None:
        self.tenant_id, self.available, self.reserved, self.spent = tenant_id, available, reserved, spent
        self.unbilled, self.exists, self.dirty = unbilled, exists, False


class GrantRow:
    """One grant pot of tokens (its ``granted`` total never changes, so it is not read)."""

    __slots__ = ("available", "dirty", "expires", "id", "reserved", "spent")

    def __init__(self, gid: int, available: int, reserved: int, spent: int, expires: int | None) -> None:
        self.id, self.available, self.reserved, self.spent, self.expires = gid, available, reserved, spent, expires
        self.dirty = False


RES_COLS = ("id", "tenant_id", "request_id", "model", "instance_id", "state", "prompt_tokens", "max_tokens",
            "price_in", "price_out", "grant_parts", "credit_micro", "progress", "used_prompt", "used_completion",
            "charged_parts", "charged_micro", "unbilled_tokens", "recovered", "created_at", "settled_at")
RES_MUTABLE = ("state", "progress", "used_prompt", "used_completion", "charged_parts", "charged_micro",
               "unbilled_tokens", "recovered", "settled_at")
LEASE_COLS = ("id", "tenant_id", "instance_id", "state", "taken_parts", "taken_micro", "grant_parts",
              "credit_micro", "created_at", "closed_at")
LEASE_MUTABLE = ("state", "grant_parts", "credit_micro", "closed_at")
# rows as tuples in the order of their columns, by C-level attribute look-ups (the writer builds one per charge)
_ROW_GETTERS: dict[tuple[str, ...], Any] = {names: operator.attrgetter(*names) for names in (RES_COLS, RES_MUTABLE)}


class ReservationRow:
    """A reservation row, mutable while the batch decides."""

    __slots__ = ("dirty", "new", *RES_COLS)
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
        for name, value in zip(RES_COLS, values, strict=True):
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


class LeaseRow:
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


class Rows:
    """The rows of one batch: ``accounts`` and ``grants`` (in spending order) per tenant, grants by id,
    reservations by id and the tenants' open leases by id (oldest first)."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountRow] = {}
        self.grants: dict[str, list[GrantRow]] = {}
        self.grant_by_id: dict[int, GrantRow] = {}
        self.res: dict[str, ReservationRow] = {}
        self.leases: dict[str, LeaseRow] = {}

    def load(self, db: LedgerDB, conn: Any, ops: list[Op], *, check_new: bool) -> None:
        """BEGIN, lock the tenants' accounts, read their grants and the batch's reservations: one round
        trip on PostgreSQL (a pipeline; the statements still run in order, the reads after the lock).
        New reservations and leases are looked up too when ``check_new`` (a retried batch)."""
        tenants = sorted({op.tenant_id for op in ops})
        where, params = db.in_list("tenant_id", tenants)
        ids = sorted({op.rid for op in ops if op.kind not in ("reserve", "lease", "close") or check_new})
        want_leases = any(op.kind in ("lease", "charge", "close") for op in ops)
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
                rows = conn.execute(f"SELECT {', '.join(RES_COLS)} FROM ledger_reservations WHERE {where_id}", p)
                if db.kind == "sqlite":
                    rows = rows.fetchall()
            leases: Any = ()
            if want_leases:
                leases = conn.execute(f"SELECT {', '.join(LEASE_COLS)} FROM ledger_leases WHERE {where} AND state=0 "
                                      "ORDER BY created_at, id", params)
        self._fill(tenants, accounts, grants, rows, leases)

    def _fill(self, tenants: list[str], accounts: Any, grants: Any, rows: Any, leases: Any) -> None:
        """The rows read by :meth:`load` as mutable objects; a tenant without an account gets a new one."""
        for row in accounts:
            self.accounts[row[0]] = AccountRow(row[0], row[1], row[2], row[3], row[4], exists=True)
        for t in tenants:
            self.accounts.setdefault(t, AccountRow(t))
            self.grants[t] = []
        for gid, tenant, available, reserved, spent, expires in grants:
            g = GrantRow(gid, available, reserved, spent, expires)
            self.grants[tenant].append(g)
            self.grant_by_id[gid] = g
        for gs in self.grants.values():
            gs.sort(key=lambda g: (g.expires is None, g.expires or 0, g.id))
        for row in rows:
            self.res[row[0]] = ReservationRow(row, new=False)
        for row in leases:
            self.leases[row[0]] = LeaseRow(row, new=False)

    def write(self, db: LedgerDB, conn: Any) -> None:
        """The batch's changes, then COMMIT: one round trip on PostgreSQL."""
        with db.pipeline(conn):
            cur = conn.cursor()
            self._write_rows(db, cur)
            cur.close()
            db.commit(conn)

    def _write_rows(self, db: LedgerDB, cur: Any) -> None:
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
        new = [r.row(RES_COLS) for r in self.res.values() if r.new]
        if new:
            db.bulk_insert(cur, "ledger_reservations", RES_COLS, new)
        changed = [(*r.row(RES_MUTABLE), r.id) for r in self.res.values() if r.dirty and not r.new]
        if changed:
            db.bulk_update(cur, "ledger_reservations", "id", RES_MUTABLE, changed)
        new_leases = [lease.row(LEASE_COLS) for lease in self.leases.values() if lease.new]
        if new_leases:
            db.bulk_insert(cur, "ledger_leases", LEASE_COLS, new_leases)
        leases = [(*lease.row(LEASE_MUTABLE), lease.id) for lease in self.leases.values()
                  if lease.dirty and not lease.new]
        if leases:
            db.bulk_update(cur, "ledger_leases", "id", LEASE_MUTABLE, leases)
