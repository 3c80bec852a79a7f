"""The ledger's pure rules: what a worst case holds, what a usage is charged, and what money buys.

All integers: money in micro-dollars, prices in pico-dollars per token, so ``1 US$/Mtok = 1
micro-dollar/token = 10^6 pico-dollars/token`` and no float ever touches a balance. A negative price
means the tenant has no price for the model: credits cannot pay for it.

* :func:`cover`: the tokens a budget pays for, prompt tokens first, the charge rounded up to the
  micro-dollar and never above the budget.
* :func:`hold` (reserve): the worst case ``prompt + max_tokens`` tokens is covered by non-expired grants
  first (in the order given: earliest expiry first, then oldest; :func:`take_grants`), the remainder by
  credit at the model's price (prompt tokens at the input price, then ``max_tokens`` at the output price;
  grants cover prompt tokens first). :func:`refusal` explains a worst case that does not fit.
* :func:`split` (settle): the actual tokens use the reservation's grant parts first, then its credit; what
  is left beyond the reservation is returned for the caller to cover from what is still available.

The same functions decide in the database batch (:mod:`sovcloud.metering.book`) and in the memory of a
leasing gateway instance (:mod:`sovcloud.metering.lease`), so both charge alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sovcloud.errors import LedgerValueError

__all__ = [
    "PICO_PER_MICRO",
    "GrantLike",
    "Hold",
    "Split",
    "cover",
    "hold",
    "price_pico",
    "refusal",
    "split",
    "take_grants",
]

PICO_PER_MICRO = 1_000_000


def price_pico(usd_per_mtok: float) -> int:
    """US$ per million tokens as integer pico-dollars per token; a LedgerValueError for NaN or infinity."""
    try:
        return round(usd_per_mtok * PICO_PER_MICRO)
    except (ValueError, OverflowError) as exc:  # round() of NaN or infinity
        raise LedgerValueError(f"price {usd_per_mtok} US$ per million tokens is not a finite number") from exc


def cover(prompt: int, completion: int, pin: int, pout: int, budget: int) -> tuple[int, int, int]:
    """Tokens a budget of ``budget`` micro-dollars pays for, prompt first: (prompt, completion, micro).

    ``pin``/``pout`` are pico-dollars per token (negative: no price, nothing is covered). The charge is
    the exact cost rounded up to the micro-dollar and never exceeds ``budget``.
    """
    if pin < 0 or pout < 0 or (prompt == 0 and completion == 0):
        return 0, 0, 0
    full = prompt * pin + completion * pout
    money = budget * PICO_PER_MICRO
    if full <= money:
        return prompt, completion, -(-full // PICO_PER_MICRO)
    p = prompt if pin == 0 else min(prompt, money // pin)
    money -= p * pin
    c = completion if pout == 0 else min(completion, money // pout)
    return p, c, -(-(p * pin + c * pout) // PICO_PER_MICRO)


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
    cost = -(-(h.rp * pin + (h.rest - h.rp) * pout) // PICO_PER_MICRO)
    return (f"{head}, the other {h.rest} cost US${cost / 1e6:.6f} but its credit is US${available / 1e6:.6f}; "
            f"lower max_tokens or add credit (`sovcloud tenants credit {tenant_id} USD`)")
