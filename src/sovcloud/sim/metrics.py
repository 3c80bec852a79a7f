"""Metrics of a finished simulation: counts, SLO attainment, percentiles, residency check, energy.

* Percentiles come from log-spaced histograms from 1 ms (see :mod:`sovcloud.sim.kernels`),
  interpolated within a bin in log space: per backend, site and workload 100 bins per decade
  (within +-1.2 % of the exact order statistic), per zone 25 per decade (+-4.7 %).
* SLO attainment (goodput share) of a workload = requests served within every SLO of the workload
  (TTFT and TPOT limits, network RTT budget, batch deadline on end to end) / (arrivals - in flight
  at the end): rejected and lost requests count as misses.
* Residency is re-checked independently of the router: the engine counts requests per (origin zone,
  serving site) using the backends' sites, and :func:`residency_violations` joins those pairs by name
  with ``world.ds.residency``; the simulator must report zero.
* Energy per backend and hour, at full scale: powered chips = replicas x tp x (available slot-seconds
  / nominal slot-seconds), utilisation u = busy / available slot-seconds, IT power
  :func:`sovcloud.physics.energy.it_power_mw`, facility energy x PUE, water = WUE x IT energy, carbon =
  grid intensity x facility energy (location based), cost = facility energy x electricity price.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sovcloud.physics.energy import ChipPowerSpec, carbon_t, it_power_mw, water_m3
from sovcloud.sim import kernels as k
from sovcloud.world.compiled import World

__all__ = ["METRICS", "QUANTILES", "energy_by_backend", "footprint_totals", "percentiles", "residency_violations"]

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
METRICS = ("ttft", "tpot", "e2e")


def percentiles(hist: NDArray[np.int64], bins_per_decade: float = k.BINS_PER_DECADE) -> NDArray[np.float64]:
    """``[..., 3]`` p50, p95, p99 (seconds) of log histograms ``[..., bins]`` from 1 ms; NaN where empty."""
    h = hist.astype(np.float64)
    cum = np.cumsum(h, axis=-1)
    n = cum[..., -1:]
    out = np.full(hist.shape[:-1] + (len(QUANTILES),), np.nan)
    for j, (_, q) in enumerate(QUANTILES):
        target = q * n
        idx = np.minimum(np.argmax(cum >= target, axis=-1), h.shape[-1] - 1)[..., None]
        below = np.take_along_axis(cum, idx, -1) - np.take_along_axis(h, idx, -1)
        inside = np.take_along_axis(h, idx, -1)
        frac = np.divide(target - below, inside, out=np.zeros_like(target), where=inside > 0)
        val = 10.0 ** (k.HIST_LO_LOG10 + (idx + np.clip(frac, 0.0, 1.0)) / bins_per_decade)
        out[..., j] = np.where(n > 0, val, np.nan)[..., 0]
    return out


def residency_violations(world: World, routed: NDArray[np.int64]) -> int:
    """Requests served at a site the residency rules forbid for their origin zone (``routed[zone, site]``)."""
    z, s = np.nonzero(routed)
    served = pd.DataFrame({"zone": np.array(world.zones, dtype=object)[z],
                           "site": np.array(world.sites, dtype=object)[s], "n": routed[z, s]})
    rules = world.ds.residency.to_dataframe(name="allowed").reset_index()[["zone", "site", "allowed"]]
    joined = served.merge(rules, on=["zone", "site"], how="left")
    forbidden = ~joined["allowed"].fillna(False).astype(bool)
    return int(joined.loc[forbidden, "n"].sum())


def energy_by_backend(world: World, chips: NDArray[np.float64], chip_ids: tuple[str, ...],
                      site: NDArray[np.int64], busy_s: NDArray[np.float64], capacity_s: NDArray[np.float64],
                      nominal_s: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """Full-scale energy, water, carbon and cost ``[hour, backend]`` (see module docstring)."""
    spec = ChipPowerSpec.from_accelerators(world.scenario.accelerators)
    ci = np.array([spec.ids.index(c) for c in chip_ids], dtype=np.int64)
    util = np.clip(np.divide(busy_s, capacity_s, out=np.zeros_like(busy_s), where=capacity_s > 0), 0.0, 1.0)
    powered = chips[None, :] * np.divide(capacity_s, nominal_s, out=np.zeros_like(capacity_s),
                                         where=nominal_s > 0)
    it_mw = it_power_mw(powered, util, spec.tdp_w[ci], spec.idle_fraction[ci], spec.server_chips[ci],
                        spec.server_overhead_w[ci])
    ds = world.ds
    pue, wue = ds.site_pue.values[site], ds.site_wue_l_per_kwh.values[site]
    grid, price = ds.site_carbon_g_per_kwh.values[site], ds.site_electricity_usd_per_kwh.values[site]
    return {"it_mw": np.asarray(it_mw), "pue": pue, "wue": wue, "grid": grid, "price": price, "util": util}


def footprint_totals(parts: dict[str, NDArray[np.float64]], hour_len_h: NDArray[np.float64]
                     ) -> dict[str, NDArray[np.float64]]:
    """Per ``[hour, backend]``: facility MWh, water m3, carbon t and electricity cost (USD)."""
    it_mwh = parts["it_mw"] * hour_len_h[:, None]
    fac = it_mwh * parts["pue"][None, :]
    return {"energy_mwh": fac, "water_m3": np.asarray(water_m3(it_mwh, parts["wue"][None, :])),
            "carbon_t": np.asarray(carbon_t(fac, parts["grid"][None, :])),
            "cost_usd": fac * 1000.0 * parts["price"][None, :]}
