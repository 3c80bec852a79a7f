"""Synthetic traffic follows the demand (rates, diurnal profile, burstiness, token lengths); traces spread by demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sovcloud.scenario.loader import load_scenario
from sovcloud.sim.traces import load_trace
from sovcloud.sim.traffic import DemandRates, spread_trace
from sovcloud.world.compiled import World
from sovcloud.world.compiled import compile as compile_world

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def tiny() -> World:
    return compile_world(load_scenario(str(DATA / "tiny_a.yaml")))


def _gen(rates: DemandRates, seed: int, burstiness: float, hours: float = 1.0, sample: float = 0.01):  # type: ignore[no-untyped-def]
    surge = np.ones((int(rates.zone.max()) + 1, int(np.ceil(hours * 60))))
    return rates.synthetic(0.0, hours * 3600.0, sample=sample, burstiness=burstiness, start_hour=0, surge=surge,
                           rng=np.random.default_rng(seed))


def test_rates_reproduce_the_demand_in_tokens(tiny: World) -> None:
    rates = DemandRates.from_world(tiny, 2025)
    per_key_tokens = rates.rate * 3600.0 * (rates.in_mean + rates.out_mean)[rates.workload][:, None]
    assert per_key_tokens.sum() == pytest.approx(float(tiny.ds.demand_tokens_per_h.sel(period=2025).sum()))


def test_poisson_counts_tokens_and_determinism(tiny: World) -> None:
    rates = DemandRates.from_world(tiny, 2025)
    r = _gen(rates, 1, 0.0)
    expected = rates.rate[:, 0].sum() * 3600.0 * 0.01
    assert len(r) == pytest.approx(expected, rel=0.01)
    assert np.all(np.diff(r.t) >= 0) and r.t[0] >= 0 and r.t[-1] < 3600.0
    for w in range(len(rates.in_mean)):
        sel = r.workload == w
        assert r.inp[sel].mean() == pytest.approx(rates.in_mean[w], rel=0.03)
        assert r.out[sel].mean() == pytest.approx(rates.out_mean[w], rel=0.03)
    assert np.all(r.inp >= 1) and np.all(r.inp == np.rint(r.inp))
    again = _gen(rates, 1, 0.0)
    np.testing.assert_array_equal(r.t, again.t)
    np.testing.assert_array_equal(r.zone, again.zone)
    # per-minute counts: Poisson (index of dispersion ~1) without burstiness, overdispersed with it
    for cv, lo, hi in ((0.0, 0.7, 1.3), (0.5, 5.0, np.inf)):
        counts = np.bincount((_gen(rates, 2, cv, hours=2.0).t // 60).astype(int))
        dispersion = counts.var() / counts.mean()
        assert lo < dispersion < hi


def test_diurnal_profile_and_surge(world: World) -> None:
    rates = DemandRates.from_world(world, 2027)
    total = rates.rate.sum(axis=0)
    assert total.max() > 1.2 * total.min()  # the global day has peaks and troughs in UTC
    surge = np.ones((len(world.zones), 10))
    de = [i for i, c in enumerate(world.ds.zone_country.values) if c == "DE"]
    surge[de] = 3.0
    base = rates.synthetic(0.0, 600.0, sample=1e-4, burstiness=0.0, start_hour=12, surge=np.ones_like(surge),
                           rng=np.random.default_rng(4))
    hot = rates.synthetic(0.0, 600.0, sample=1e-4, burstiness=0.0, start_hour=12, surge=surge,
                          rng=np.random.default_rng(4))
    n_base, n_hot = np.isin(base.zone, de).sum(), np.isin(hot.zone, de).sum()
    assert n_hot == pytest.approx(3 * n_base, rel=0.1)


def test_trace_rows_spread_over_zones_by_demand(tiny: World) -> None:
    rates = DemandRates.from_world(tiny, 2025)
    tr = load_trace("azure-conv")
    sp = spread_trace(tr, rates, scale=1.0, horizon_s=7200.0, start_hour=0,
                      surge_of=lambda t, z: np.ones(len(t)), rng=np.random.default_rng(9))
    assert len(sp.requests) == tr.rows and sp.outside_window == 0
    share = np.bincount(sp.requests.zone, minlength=3) / tr.rows
    demand = tiny.ds.demand_tokens_per_h.sel(period=2025, hour=0).sum(["model", "workload"]).values
    users = demand / demand.sum()
    # request shares follow the zones' shares of demand (token means are equal across zones here)
    np.testing.assert_allclose(share, users, atol=0.015)
    np.testing.assert_array_equal(np.sort(sp.row), np.arange(tr.rows))
    faster = spread_trace(tr, rates, scale=2.0, horizon_s=1200.0, start_hour=0,
                          surge_of=lambda t, z: np.ones(len(t)), rng=np.random.default_rng(9))
    assert faster.outside_window + len(faster.requests) == tr.rows
    assert faster.requests.t.max() < 1200.0
    assert len(faster.requests) == pytest.approx(tr.rows * 1200.0 / (tr.span_s / 2.0), rel=0.15)
