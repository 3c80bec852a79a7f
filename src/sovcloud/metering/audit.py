"""Reading the ledger: a tenant's balance, and the audit that re-derives every balance independently.

The audit reads one consistent snapshot and checks, to the token and the micro-dollar:

1. per grant: ``granted = available + reserved + spent`` and every term ``>= 0``;
2. per tenant credit: ``credited = available + reserved + spent`` and every term ``>= 0``;
3. the journal: sum of ``grant`` entries = sum of ``granted``; sum of ``credit`` entries = ``credited``;
4. the usage records: per grant, ``reserved`` = the grant parts of pending reservations and of open leases,
   and ``spent`` = the charged parts of settled ones; per tenant, credit ``reserved``/``spent`` and
   ``unbilled_tokens`` likewise.

So ``initial grants + credits = remaining + reserved + spent`` is checked both from the running counters
and from the per-request records, which are written by different code paths of each batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sovcloud.metering.db import LedgerDB
from sovcloud.metering.records import PENDING, RELEASED, SETTLED, parse_parts

__all__ = ["AuditResult", "Balance", "read_audit", "read_balance"]


@dataclass(frozen=True)
class Balance:
    """One tenant's tokens (free grants) and money (credits, in micro-dollars) at an instant."""

    tenant_id: str
    granted_tokens: int  # every grant ever made
    grant_tokens: int  # available now in non-expired grants
    expired_tokens: int  # left unused in expired grants
    reserved_tokens: int  # held by pending reservations
    spent_tokens: int
    credited_micro: int
    credit_micro: int  # available
    reserved_micro: int
    spent_micro: int
    unbilled_tokens: int  # usage above every balance, recorded but not charged
    pending: int  # reservations in flight
    leases: int = 0  # open leases (gateway instances admitting this tenant's requests in memory)
    leased_tokens: int = 0  # of reserved_tokens, held by open leases
    leased_micro: int = 0  # of reserved_micro, held by open leases

    @property
    def credit_usd(self) -> float:
        return self.credit_micro / 1e6

    @property
    def reserved_usd(self) -> float:
        return self.reserved_micro / 1e6

    @property
    def spent_usd(self) -> float:
        return self.spent_micro / 1e6

    @property
    def credited_usd(self) -> float:
        return self.credited_micro / 1e6


@dataclass(frozen=True)
class AuditResult:
    """The outcome of :func:`read_audit`: ``ok`` when every check holds, else one line per problem."""

    ok: bool
    problems: tuple[str, ...]
    tenants: int
    granted_tokens: int
    remaining_tokens: int
    reserved_tokens: int
    spent_tokens: int
    credited_micro: int
    remaining_micro: int
    reserved_micro: int
    spent_micro: int
    unbilled_tokens: int
    pending: int
    settled: int
    released: int
    leases: int = 0  # open leases


def _snapshot(db: LedgerDB, conn: Any) -> None:
    conn.execute("BEGIN" if db.kind == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def read_balance(db: LedgerDB, conn: Any, tenant_id: str, now: float) -> Balance:
    """The balance of ``tenant_id`` (zeros for a tenant the ledger has never seen)."""
    _snapshot(db, conn)
    try:
        acct = conn.execute(db.sql("SELECT credited, credit_available, credit_reserved, credit_spent, unbilled_tokens "
                                   "FROM ledger_accounts WHERE tenant_id=?"), (tenant_id,)).fetchone()
        grants = conn.execute(db.sql("SELECT granted, available, reserved, spent, expires_at FROM ledger_grants "
                                     "WHERE tenant_id=?"), (tenant_id,)).fetchall()
        pending = conn.execute(db.sql("SELECT COUNT(*) FROM ledger_reservations WHERE state=? AND tenant_id=?"),
                               (PENDING, tenant_id)).fetchone()[0]
        leases = conn.execute(db.sql("SELECT grant_parts, credit_micro FROM ledger_leases WHERE state=? AND "
                                     "tenant_id=?"), (PENDING, tenant_id)).fetchall()
    finally:
        db.rollback(conn)
    credited, available, reserved, spent, unbilled = acct if acct is not None else (0, 0, 0, 0, 0)
    live = sum(a for _, a, _, _, e in grants if e is None or e > now)
    return Balance(
        tenant_id=tenant_id,
        granted_tokens=sum(g[0] for g in grants), grant_tokens=live,
        expired_tokens=sum(g[1] for g in grants) - live,
        reserved_tokens=sum(g[2] for g in grants), spent_tokens=sum(g[3] for g in grants),
        credited_micro=credited, credit_micro=available, reserved_micro=reserved, spent_micro=spent,
        unbilled_tokens=unbilled, pending=int(pending), leases=len(leases),
        leased_tokens=sum(t for parts, _ in leases for _, t in parse_parts(parts)),
        leased_micro=sum(int(m) for _, m in leases),
    )


def read_audit(db: LedgerDB, conn: Any, tenant_id: str | None) -> AuditResult:
    """Check every balance equation of ``tenant_id`` (or of every tenant) against the records."""
    where, params = ("WHERE tenant_id=?", (tenant_id,)) if tenant_id is not None else ("", ())
    _snapshot(db, conn)
    try:
        entries = conn.execute(db.sql(f"SELECT tenant_id, kind, SUM(tokens), SUM(micro) FROM ledger_entries {where} "
                                      "GROUP BY tenant_id, kind"), params).fetchall()
        grants = conn.execute(db.sql(f"SELECT id, tenant_id, granted, available, reserved, spent FROM ledger_grants "
                                     f"{where}"), params).fetchall()
        accounts = conn.execute(db.sql(f"SELECT tenant_id, credited, credit_available, credit_reserved, credit_spent, "
                                       f"unbilled_tokens FROM ledger_accounts {where}"), params).fetchall()
        rows = conn.execute(db.sql(f"SELECT id, tenant_id, state, grant_parts, credit_micro, charged_parts, "
                                   f"charged_micro, unbilled_tokens FROM ledger_reservations {where}"),
                            params).fetchall()
        leases = conn.execute(db.sql(f"SELECT id, tenant_id, grant_parts, credit_micro FROM ledger_leases "
                                     f"{where} {'AND' if where else 'WHERE'} state={PENDING}"), params).fetchall()
    finally:
        db.rollback(conn)
    problems: list[str] = []
    usage = _usage(rows, leases, problems)
    journal_tokens: defaultdict[str, int] = defaultdict(int)
    journal_micro: defaultdict[str, int] = defaultdict(int)
    for tenant, kind, tokens, micro in entries:
        journal_tokens[tenant] += int(tokens or 0) if kind == "grant" else 0
        journal_micro[tenant] += int(micro or 0) if kind == "credit" else 0
    granted = _check_grants(grants, usage, problems)
    seen = _check_credits(accounts, usage, journal_micro, problems)
    for tenant in sorted(set(granted) | set(journal_tokens)):
        if granted[tenant] != journal_tokens[tenant]:
            problems.append(f"grants of {tenant}: {granted[tenant]} tokens != journal {journal_tokens[tenant]}")
    return AuditResult(
        ok=not problems, problems=tuple(problems), tenants=len(seen | set(granted)),
        granted_tokens=sum(g[2] for g in grants), remaining_tokens=sum(g[3] for g in grants),
        reserved_tokens=sum(g[4] for g in grants), spent_tokens=sum(g[5] for g in grants),
        credited_micro=sum(a[1] for a in accounts), remaining_micro=sum(a[2] for a in accounts),
        reserved_micro=sum(a[3] for a in accounts), spent_micro=sum(a[4] for a in accounts),
        unbilled_tokens=sum(a[5] for a in accounts),
        pending=usage.counts[PENDING], settled=usage.counts[SETTLED], released=usage.counts[RELEASED],
        leases=len(leases),
    )


@dataclass
class _Usage:
    """What the per-request records say: per grant the tokens reserved and spent, per tenant the credit
    reserved and spent and the unbilled tokens, and how many reservations are in each state."""

    g_reserved: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    g_spent: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    c_reserved: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    c_spent: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    unbilled: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    counts: dict[int, int] = field(default_factory=lambda: {PENDING: 0, SETTLED: 0, RELEASED: 0})


def _usage(rows: list[Any], leases: list[Any], problems: list[str]) -> _Usage:
    """Sum the reservations (pending: reserved; settled: spent and unbilled) and the open leases (reserved)."""
    u = _Usage()
    for rid, tenant, state, parts, credit, charged, money, extra in rows:
        u.counts[state] = u.counts.get(state, 0) + 1
        if state == PENDING:
            for gid, t in parse_parts(parts):
                u.g_reserved[gid] += t
            u.c_reserved[tenant] += credit
        elif state == SETTLED:
            for gid, t in parse_parts(charged):
                u.g_spent[gid] += t
            u.c_spent[tenant] += money
            u.unbilled[tenant] += extra
        elif state != RELEASED:
            problems.append(f"reservation {rid}: unknown state {state}")
    for _, tenant, parts, credit in leases:  # what open leases hold is reserved too
        for gid, t in parse_parts(parts):
            u.g_reserved[gid] += t
        u.c_reserved[tenant] += credit
    return u


def _check_grants(grants: list[Any], u: _Usage, problems: list[str]) -> defaultdict[str, int]:
    """Each grant's equation and its agreement with the records; returns the tokens granted per tenant."""
    granted: defaultdict[str, int] = defaultdict(int)
    for gid, tenant, total, available, reserved, spent in grants:
        granted[tenant] += total
        if total != available + reserved + spent or min(available, reserved, spent) < 0:
            problems.append(f"grant {gid} of {tenant}: granted {total} != available {available} + reserved "
                            f"{reserved} + spent {spent} (or a negative term)")
        if reserved != u.g_reserved.pop(gid, 0) or spent != u.g_spent.pop(gid, 0):
            problems.append(f"grant {gid} of {tenant}: reserved {reserved}/spent {spent} differ from the "
                            "reservations' records")
    for gid in sorted(set(u.g_reserved) | set(u.g_spent)):
        if u.g_reserved[gid] or u.g_spent[gid]:
            problems.append(f"reservations refer to grant {gid}, which is not in the ledger")
    return granted


def _check_credits(accounts: list[Any], u: _Usage, journal_micro: defaultdict[str, int],
                   problems: list[str]) -> set[str]:
    """Each tenant's credit equation, its agreement with the records and with the journal; returns the
    tenants that have an account."""
    seen: set[str] = set()
    for tenant, credited, available, reserved, spent, extra in accounts:
        seen.add(tenant)
        if credited != available + reserved + spent or min(available, reserved, spent) < 0:
            problems.append(f"credit of {tenant}: credited {credited} != available {available} + reserved {reserved} "
                            f"+ spent {spent} micro-US$ (or a negative term)")
        if reserved != u.c_reserved[tenant] or spent != u.c_spent[tenant] or extra != u.unbilled[tenant]:
            problems.append(f"credit of {tenant}: reserved {reserved}/spent {spent}/unbilled {extra} differ from "
                            f"the reservations' records ({u.c_reserved[tenant]}/{u.c_spent[tenant]}/"
                            f"{u.unbilled[tenant]})")
        if credited != journal_micro[tenant]:
            problems.append(f"credit of {tenant}: credited {credited} != journal {journal_micro[tenant]} micro-US$")
    for tenant in sorted(set(u.c_reserved) | set(u.c_spent) | set(journal_micro)):
        if tenant not in seen and (u.c_reserved[tenant] or u.c_spent[tenant] or journal_micro[tenant]):
            problems.append(f"tenant {tenant} has credit records but no account")
    return seen
