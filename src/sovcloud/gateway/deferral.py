"""The gateway's deferred line: batch requests wait here for spare capacity, interactive ones never do.

A request is deferrable when it says so: header ``x-sovcloud-priority: batch``, or OpenAI's
``service_tier: "flex"`` in the body (lower priority, slower, same answer). The router core decides it
against :meth:`sovcloud.routing.router.LoadState.for_batch` (free slots interactive work does not hold
in reserve); when no compliant backend has such a slot it waits here, in arrival order, and is woken
when a request leaves a backend (see :class:`DeferredLine`). After
``routing.batch_wait_s`` without a slot it is refused with 503
``batch_deferred_timeout`` (nothing was charged). Interactive requests are decided against the full
limits at once and so always go ahead of waiting batch work: strict priority.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from sovcloud.errors import ApiError

__all__ = ["PRIORITY_HEADER", "RECHECK_S", "WAKE_PER_LEAVE", "DeferredLine", "deferrable"]

PRIORITY_HEADER = b"x-sovcloud-priority"
#: requests a departure from a backend wakes
WAKE_PER_LEAVE = 2
#: a waiting request routes again after this long without a wake-up (seconds)
RECHECK_S = 1.0


def deferrable(header: bytes | None, service_tier: object) -> bool:
    """Whether a request is deferrable batch work (400 for a priority header that is neither value)."""
    if header is not None:
        value = header.decode("latin-1").strip().lower()
        if value not in ("batch", "interactive"):
            raise ApiError(400, f"x-sovcloud-priority: '{value}' is not a priority; send 'interactive' (default) "
                                "or 'batch' (deferred into spare capacity).", param="x-sovcloud-priority",
                           code="invalid_priority")
        if value == "batch":
            return True
    return service_tier == "flex"


class DeferredLine:
    """Batch requests waiting for a slot, in the order they came (one gateway's; no global state).

    A request leaving a backend wakes the first ``WAKE_PER_LEAVE`` waiting requests (a freed slot serves one,
    sometimes two, as the reserve of interactive work shrinks too); a woken request that leaves without routing
    (its client went away) hands its wake-up on; every waiting request also routes again after ``RECHECK_S``
    without a wake-up, so one whose model's slots freed while others were woken is never stuck. Waking is
    O(woken), not O(waiting): a long line costs nothing per completion.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._waiting)

    def wake(self, n: int = WAKE_PER_LEAVE) -> None:
        """Wake the first ``n`` requests still waiting; each routes again."""
        while n > 0 and self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    async def wait(self, deadline: float) -> None:
        """Wait to be woken (or ``RECHECK_S``), until ``deadline`` (clock time); 503 ``batch_deferred_timeout``
        once it has passed."""
        left = deadline - self._clock()
        if left <= 0:
            raise ApiError(503, "No capacity was free for this deferred (batch) request within routing.batch_wait_s; "
                                "it was not charged. Retry later, or send it without x-sovcloud-priority: batch.",
                           type_="service_unavailable", code="batch_deferred_timeout")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        used = False
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=min(left, RECHECK_S))
            used = True
        except TimeoutError:
            pass
        finally:
            if not fut.done():
                fut.cancel()  # not woken: leave the line (it is skipped when reached)
            elif not used and not fut.cancelled():
                self.wake(1)  # woken, but leaving without routing: the wake-up goes to the next one
