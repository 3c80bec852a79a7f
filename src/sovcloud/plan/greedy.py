"""The greedy baseline planner: nearest allowed site, cheapest available chip.

For each period in order: every demand group's peak rate (batch: its daily mean) goes to its
nearest feasible site (population-weighted RTT; residency, latency and availability respected),
except the resilience share, which goes to the second-nearest feasible site;
at each site each (model, workload) load gets the chip with the lowest capital cost per unit of
goodput among the chips export control allows there; servers are bought to cover the load (on top
of the fleet already bought), clipped by power caps, supply caps and the period budget in that
order. The decisions are then fixed in the same optimisation model and its LP is solved for the
routing, energy and costs, so the baseline and the optimised plan are costed identically.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sovcloud.plan.inputs import PlanInputs
from sovcloud.plan.model import BuiltModel
from sovcloud.plan.solver import SolveResult, solve_fixed

__all__ = ["greedy_decisions", "greedy_fixed", "solve_greedy"]


def _site_loads(pi: PlanInputs) -> np.ndarray:
    """Peak load [site, model, workload, period] (Mtok/h) sent to each group's nearest site."""
    d = pi.ds
    S, P = len(d.site), len(d.period)
    load = np.zeros((S, len(d.model), len(d.workload), P))
    m_index = {str(m): i for i, m in enumerate(d.model.values)}
    for wi, w in enumerate(d.workload.values):
        dem = pi.demand.get(str(w))
        if dem is None:
            continue
        g = dem.ds
        G = len(g.group)
        rtt_g = g.rtt_ms.values  # population-weighted RTT [g, s]
        peak = g.demand.sum("slice").values * pi.slice_hours / 24.0 if dem.kind == "batch" \
            else g.demand.max("slice").values  # [g, m', p]
        mi = [m_index[str(m)] for m in g.model.values]
        rho = pi.world.scenario.planning.resilience_share
        for pi_, _p in enumerate(d.period.values):
            ok = g.route.values & d.site_available.values[None, :, pi_]
            cost = np.where(ok, rtt_g, np.inf)
            order = np.argsort(cost, axis=1)
            nearest, second = order[:, 0], order[:, min(1, order.shape[1] - 1)]
            has = np.isfinite(cost[np.arange(G), nearest])
            has2 = has & (second != nearest) & np.isfinite(cost[np.arange(G), second])
            # resilience: the second-nearest site takes the share that must survive losing the nearest
            split = np.where(has2, min(rho, 0.5), 0.0)
            for k, m in enumerate(mi):
                np.add.at(load[:, m, wi, pi_], nearest[has], peak[has, k, pi_] * (1 - split[has]))
                np.add.at(load[:, m, wi, pi_], second[has2], peak[has2, k, pi_] * split[has2])
    return load


def greedy_decisions(pi: PlanInputs) -> dict[str, xr.DataArray]:
    """Servers bought [site, chip, bought], built MW and openings [site, period] of the baseline."""
    d = pi.ds
    S, C, P = len(d.site), len(d.chip), len(d.period)
    load = _site_loads(pi)
    cap = d.cap.values  # [m, c, w]
    n = d.server_chips.values.astype(float)
    servers = np.zeros((S, C, P))
    built = np.zeros((S, P))
    fleet = d.installed_servers.values.astype(float)  # start from what is installed, in servers
    hostable = d.hostable.values
    spent_total = 0.0
    server_mw = n * d.chip_full_mw.values
    installed = d.installed_mw.values
    avail = d.site_available.values
    # built MW never shrinks, so in period p it can reach at most the smallest option cap from p on
    opt_min = np.minimum.accumulate(d.option_cap_mw.values[:, ::-1], axis=1)[:, ::-1]
    # servers bought in p stay: they must fit every later period's power where the site serves
    feed = np.where(avail, installed + opt_min, np.inf)
    feed_min = np.minimum.accumulate(feed[:, ::-1], axis=1)[:, ::-1]
    candidate = d.candidate.values & (d.option_cap_mw.values.max(axis=1) > 0)

    def site_spend(p: int, fleet_after: np.ndarray) -> tuple[np.ndarray, float]:
        prev = built[:, p - 1] if p else np.zeros(S)
        need = (fleet_after * server_mw[None, :]).sum(axis=1)
        b = np.minimum(np.maximum(np.maximum(need - installed[:, p], 0.0), prev), opt_min[:, p])
        opening = candidate & (b > 1e-9) & (prev <= 1e-9)
        return b, float(((b - prev) * d.capex_per_mw.values).sum() + d.fixed_capex.values[opening].sum())

    for p in range(P):
        allowed = d.export_allowed.values[:, :, p].T & avail[:, p][:, None] & hostable  # [s, c]
        price = d.capex_server.values[:, :, p].T / n[None, :]  # US$M per chip [s, c]
        chips_needed = np.zeros((S, C))
        for m in range(cap.shape[0]):
            for w in range(cap.shape[2]):
                if not load[:, m, w, p].any():
                    continue
                rate = np.where(cap[m, :, w] > 0, cap[m, :, w], 1.0)
                per_rate = np.where(allowed & (cap[m, :, w] > 0)[None, :], price / rate, np.inf)
                best = np.argmin(per_rate, axis=1)
                feasible = np.isfinite(per_rate[np.arange(S), best])
                rows = np.flatnonzero(feasible & (load[:, m, w, p] > 0))
                chips_needed[rows, best[rows]] += load[rows, m, w, p] / cap[m, best[rows], w]
        buy = np.maximum(np.ceil(chips_needed / n[None, :] - 1e-9) - fleet, 0.0) * allowed
        # power: purchases scaled down to what this and every later period can feed
        room = np.maximum(feed_min[:, p] - (fleet * server_mw[None, :]).sum(axis=1), 0.0)
        want = (buy * server_mw[None, :]).sum(axis=1)
        scale = np.where(want > room, room / np.where(want > 0, want, 1.0), 1.0)
        buy = np.floor(buy * scale[:, None] + 1e-9)
        # supply caps per chip
        supply = d.supply_servers.values[:, p]
        total = buy.sum(axis=0)
        scale_c = np.where(np.isfinite(supply) & (total > supply), supply / np.where(total > 0, total, 1.0), 1.0)
        buy = np.floor(buy * scale_c[None, :] + 1e-9)
        # budget of the period and what is left of the total, opening costs included
        limit = min(float(d.budget.values[p]), d.attrs["budget_total"] - spent_total)
        capex = float((buy * d.capex_server.values[:, :, p].T).sum())
        b, capex_sites = site_spend(p, fleet + buy)
        for _ in range(20):  # scale purchases down until servers and sites fit what is left
            if capex + capex_sites <= limit + 1e-9 or not buy.any():
                break
            buy = np.floor(buy * max(0.0, min(0.99, (limit - capex_sites) / capex)))
            capex = float((buy * d.capex_server.values[:, :, p].T).sum())
            b, capex_sites = site_spend(p, fleet + buy)
        servers[:, :, p] = buy
        fleet += buy
        built[:, p] = b
        spent_total += capex + capex_sites
    coords = {"site": d.site.values, "chip": d.chip.values}
    out = {
        "servers": xr.DataArray(servers, dims=("site", "chip", "bought"),
                                coords={**coords, "bought": d.period.values}),
        "built": xr.DataArray(built, dims=("site", "period"), coords={"site": d.site.values,
                                                                     "period": d.period.values}),
    }
    opened = (built > 1e-9).astype(float)
    out["opened"] = xr.DataArray(np.maximum.accumulate(opened, axis=1), dims=("site", "period"),
                                 coords={"site": d.site.values, "period": d.period.values})
    return out


def greedy_fixed(bm: BuiltModel) -> dict[str, xr.DataArray]:
    """The greedy decisions aligned to the model's variables (to fix them, or to start from them)."""
    decisions = greedy_decisions(bm.inputs)
    fixed = {k: v for k, v in decisions.items() if k in bm.model.variables}
    if "opened" in fixed:
        fixed["opened"] = fixed["opened"].sel(site=bm.model.variables["opened"].labels.coords["site"].values)
    return fixed


def solve_greedy(bm: BuiltModel) -> SolveResult:
    """Greedy decisions, evaluated on the planning model's LP (same routing, energy and costs)."""
    return solve_fixed(bm.model, greedy_fixed(bm), source="greedy")
