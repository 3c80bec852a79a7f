"""Helpers for the simulator's tests: the conservation check every whole simulation must pass."""

from __future__ import annotations

import numpy as np

from sovcloud.sim.kernels import CZ_ARRIVALS, CZ_INFLIGHT, CZ_LOST, CZ_SERVED
from sovcloud.sim.run import SimRun

__all__ = ["conserved"]


def conserved(run: SimRun) -> None:
    """Every arrival is served, rejected, lost or in flight, exactly once, per zone and workload."""
    e = run.engine
    accounted = e.cz[CZ_SERVED] + e.rej.sum(axis=2) + e.cz[CZ_LOST] + e.cz[CZ_INFLIGHT]
    np.testing.assert_array_equal(e.cz[CZ_ARRIVALS], accounted)
    assert int(e.cz[CZ_ARRIVALS].sum()) == run.requests > 0
