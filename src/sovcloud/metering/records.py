"""The ledger's records: reservations, settlements, the queued operations and the grant-parts text.

Every operation on the ledger is an :class:`Op` queued for the writer and applied in a batch
(:class:`~sovcloud.metering.book.Batch`); its result is a :class:`Reservation`, a :class:`Settlement`, a
:class:`LeaseGrant`, None or the :class:`~sovcloud.errors.LedgerError` that refused it. A reservation row is
in one of three states: :data:`PENDING` (held), :data:`SETTLED` (charged) or :data:`RELEASED` (returned);
a lease row is :data:`PENDING` while open and :data:`RELEASED` once closed.

Grant parts (which grants a reservation or lease holds tokens of, and how many) are stored as the text
``"grant_id:tokens,..."``: :func:`parse_parts` reads it, :func:`format_parts` writes it (dropping zeros).
Money is in integer micro-US$ (``credit_micro``); the ``credit_usd`` floats are for display only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "PENDING",
    "RELEASED",
    "SETTLED",
    "Charge",
    "LeaseAsk",
    "LeaseGrant",
    "Op",
    "Reservation",
    "Settlement",
    "format_parts",
    "parse_parts",
]

PENDING, SETTLED, RELEASED = 0, 1, 2


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


def parse_parts(text: str) -> list[tuple[int, int]]:
    """``"g:t,g:t"`` as ``[(grant id, tokens), ...]`` in the order written (empty text: no parts)."""
    if not text:
        return []
    return [(int(g), int(t)) for g, _, t in (p.partition(":") for p in text.split(","))]


def format_parts(parts: list[tuple[int, int]]) -> str:
    """``[(grant id, tokens), ...]`` as ``"g:t,g:t"``, leaving out parts of zero tokens."""
    return ",".join(f"{g}:{t}" for g, t in parts if t)


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


@dataclass(slots=True)
class Op:
    """One queued operation. ``kind``: reserve | settle | release | progress | recover (a reservation in the
    database), or lease | charge | close (requests admitted in memory against a lease, see
    :mod:`sovcloud.metering.lease`)."""

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
