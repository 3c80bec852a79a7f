"""Writing a plan: ``plan.json`` (versioned schema) and Parquet tables.

``plan.json`` carries ``schema`` (``sovcloud.plan/1``), the scenario's name and SHA-256 (of its
validated, canonical JSON form, so a plan names exactly the input it answers), the shocks applied,
the solver outcome (status, objective, bound, gap, source, timings), the decisions (sites and
fleet per period), costs per period, served shares, the independent checks and the shortfall
explanations. Parquet tables: ``sites`` (site x period: built/opened/power/energy/water/carbon),
``fleet`` (site x chip x period), ``flows`` (zone x site x model x workload x period, non-zero
only), ``deployments`` (site x chip x model x period: chips running each model, with its
tensor-parallel degree), ``unserved`` (zone x model x workload x period, non-zero only) and ``costs`` (per period).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sovcloud.errors import SovcloudError
from sovcloud.plan.make import Plan
from sovcloud.plan.summary import (
    check_plan,
    explain_shortfalls,
    latency_percentiles,
    objective_parts,
    renewable_misses,
    served_shares,
    total_cost_musd,
)
from sovcloud.vocab import PLAN_SCHEMA

__all__ = ["scenario_sha256", "write_plan"]



def scenario_sha256(plan: Plan) -> str:
    text = plan.scenario.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _tables(plan: Plan) -> dict[str, pd.DataFrame]:
    a = plan.arrays
    sites = a[["built_mw", "opened", "power_used_mw", "power_cap_mw", "energy_mwh", "it_energy_mwh",
               "renewable_mwh", "water_m3", "carbon_t"]].to_dataframe().reset_index()
    fleet = a[["servers_bought", "fleet_chips", "utilization"]].to_dataframe().reset_index()
    fleet = fleet[(fleet.fleet_chips > 0) | (fleet.servers_bought > 0)]
    flows = a.served_mtok_day.to_dataframe().reset_index()
    flows = flows[flows.served_mtok_day > 1e-9].copy()
    rtt = plan.world.ds.rtt_ms.to_dataframe().reset_index()
    flows = flows.merge(rtt, on=["zone", "site"], how="left")
    unserved = a.unserved_mtok_day.to_dataframe().reset_index()
    unserved = unserved[unserved.unserved_mtok_day > 1e-9]
    dep = a.deployed_chips.to_dataframe().reset_index()
    dep = dep[dep.deployed_chips > 1e-6].copy()
    tp = plan.inputs.ds.tp.max("workload").to_dataframe().reset_index()
    dep = dep.merge(tp, on=["model", "chip"], how="left")
    costs = a[["capex_servers_musd", "capex_sites_musd", "opex_lease_musd", "energy_musd",
               "renewables_musd"]].to_dataframe().reset_index()
    return {"sites": sites, "fleet": fleet, "deployments": dep, "flows": flows, "unserved": unserved,
            "costs": costs}


def plan_document(plan: Plan, greedy: Plan | None = None, source: str | None = None) -> dict[str, Any]:
    a, r = plan.arrays, plan.result
    parts = objective_parts(plan)
    checks = check_plan(plan)
    shares = served_shares(plan)
    doc: dict[str, Any] = {
        "schema": PLAN_SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scenario": {"name": plan.scenario.name, "source": source or plan.scenario.name,
                     "sha256": scenario_sha256(plan), "shocks": list(plan.scenario.applied_shocks)},
        "periods": [int(p) for p in a.period.values],
        "sites": [{"site": s.id, "name": s.name, "city": s.city, "country": s.country, "lat": s.lat, "lon": s.lon,
                   "kind": str(s.kind), "status": str(s.status)} for s in plan.scenario.sites],
        "solver": {"source": r.source, "status": r.status, "objective": plan.built_model.objective,
                   # US$M in both objectives (TCO + penalties); the solver's own value and bound are in its units
                   "objective_musd": _num(parts[0] + parts[1]), "tco_musd": _num(parts[0]),
                   "penalties_musd": _num(parts[1]), "solver_value": _num(r.objective),
                   "bound_musd": _num(r.bound) if plan.built_model.objective == "cost" else None,
                   "solver_bound": _num(r.bound), "gap": _num(r.gap), "timings_s": r.timings,
                   "build_timings_s": plan.timings},
        "decisions": {
            "sites": [{"site": str(s), "period": int(p), "built_mw": round(float(a.built_mw.sel(site=s, period=p)), 6),
                       "opened": bool(a.opened.sel(site=s, period=p) > 0.5)}
                      for s in a.site.values for p in a.period.values
                      if float(a.built_mw.sel(site=s, period=p)) > 1e-9 or float(a.opened.sel(site=s, period=p)) > 0.5],
            "fleet": [{"site": str(site), "chip": str(chip), "period": int(period), "servers_bought": int(bought),
                       "chips": int(chips)}
                      for site, chip, period, bought, chips in _tables(plan)["fleet"][
                          ["site", "chip", "period", "servers_bought", "fleet_chips"]].to_numpy().tolist()],
            "deployments": [{"site": str(site), "chip": str(chip), "model": str(model), "period": int(period),
                             "chips": round(float(chips), 3), "tp": int(tp)}
                            for site, chip, model, period, chips, tp in _tables(plan)["deployments"][
                                ["site", "chip", "model", "period", "deployed_chips", "tp"]].to_numpy().tolist()],
        },
        "costs_musd": {str(p): {k: float(a[k].sel(period=p)) for k in
                                ("capex_servers_musd", "capex_sites_musd", "opex_lease_musd", "energy_musd",
                                 "renewables_musd")} for p in a.period.values},
        "discounted_cost_musd": total_cost_musd(plan),
        "served_share": {"by_workload": {str(w): [float(v) for v in shares.by_workload.sel(workload=w).values]
                                         for w in shares.workload.values},
                         "by_continent": {str(c): [float(v) for v in shares.by_continent.sel(continent=c).values]
                                          for c in shares.continent.values},
                         "periods": [int(p) for p in a.period.values]},
        "latency_ms_p50_p95": latency_percentiles(plan),
        "checks": {"residency_violations": checks.residency_violations,
                   "latency_violations": checks.latency_violations,
                   "export_violations": checks.export_violations, "power_violations": checks.power_violations,
                   "budget_ok": checks.budget_ok},
        "shortfalls": explain_shortfalls(plan),
        "renewables": renewable_misses(plan),
    }
    if greedy is not None:
        doc["greedy_baseline"] = {"discounted_cost_musd": total_cost_musd(greedy),
                                  "served_mtok_day": float(greedy.arrays.served_mtok_day.sum()),
                                  "objective_musd": _num(greedy.result.objective)}
        doc["served_mtok_day"] = float(a.served_mtok_day.sum())
    return doc


def write_plan(plan: Plan, out_dir: Path, greedy: Plan | None = None, source: str | None = None) -> list[Path]:
    """Write plan.json and the Parquet tables into ``out_dir``; returns the paths written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        path = out_dir / "plan.json"
        path.write_text(json.dumps(plan_document(plan, greedy, source), indent=2) + "\n", encoding="utf-8")
        written.append(path)
        for name, frame in _tables(plan).items():
            p = out_dir / f"{name}.parquet"
            frame.to_parquet(p, index=False)
            written.append(p)
    except OSError as exc:
        raise SovcloudError(f"cannot write the plan to {out_dir}: {exc.strerror}; choose another --out") from exc
    return written
