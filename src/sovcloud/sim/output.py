"""Outputs of a simulation: ``summary.json`` (schema ``sovcloud.sim/1``), Parquet tables, terminal summary.

Folder layout (``--out``, default ``out/sim``):

* ``summary.json``: the contract the report reads (requests, rejections by reason, SLO attainment,
  latency percentiles per workload, residency violations, utilisation per site, energy, water,
  carbon, cost) plus ``sample``, ``full_scale`` and, for traces, the accounting of every row.
  Deterministic: the same plan, options and seed give a byte-identical file.
* ``timeline.parquet``: hour, site, served, rejected, lost, utilization, energy_mwh, water_m3,
  carbon_t, cost_usd (rejections booked to the site the router prefers on an idle fleet; requests no
  site may serve are only in the zone table).
* ``by_zone.parquet``, ``by_site.parquet``, ``by_workload.parquet``: counts, SLO attainment and
  ttft/tpot/e2e p50/p95/p99 per (zone|site, workload) with a workload ``all`` row per group.
* ``requests.parquet`` (trace replays): every trace row's zone, model, workload and outcome.
* ``run.json``: wall time and speed (not deterministic, hence not in the summary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from sovcloud.routing.router import REASONS
from sovcloud.sim import kernels as k
from sovcloud.sim.metrics import (
    METRICS,
    QUANTILES,
    energy_by_backend,
    footprint_totals,
    percentiles,
    residency_violations,
)
from sovcloud.sim.run import SimRun
from sovcloud.vocab import SIM_SCHEMA

__all__ = ["SimOutputs", "build_outputs", "print_summary", "write_outputs"]

i8 = NDArray[np.int64]


@dataclass(frozen=True)
class SimOutputs:
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    run_info: dict[str, Any]


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _group_table(col: str, labels: list[str], workloads: list[str], counts: dict[str, i8],
                 hist: i8, denominator: tuple[str, str], coarsen: int = 1) -> pd.DataFrame:
    """Rows per (group, workload) plus (group, 'all'): counts, SLO attainment, percentiles."""
    full = {name: np.concatenate([v, v.sum(axis=1, keepdims=True)], axis=1) for name, v in counts.items()}
    h = np.concatenate([hist, hist.sum(axis=1, keepdims=True)], axis=1)
    pct = percentiles(h, k.BINS_PER_DECADE / coarsen)  # [G, W + 1, 3 metrics, 3 quantiles]
    g, w = np.meshgrid(np.arange(len(labels)), np.arange(len(workloads) + 1), indexing="ij")
    frame = pd.DataFrame({col: np.array(labels, dtype=object)[g.ravel()],
                          "workload": np.array([*workloads, "all"], dtype=object)[w.ravel()]})
    for name, v in full.items():
        frame[name] = v.ravel()
    top, minus = denominator
    den = full[top] - full[minus]
    frame["slo_attainment"] = np.divide(full["slo_met"], den, out=np.full(den.shape, np.nan), where=den > 0).ravel()
    for m, metric in enumerate(METRICS):
        for q, (qname, _) in enumerate(QUANTILES):
            frame[f"{metric}_{qname}"] = pct[:, :, m, q].ravel()
    return frame


def _latency(row: pd.Series) -> dict[str, dict[str, float | None]]:
    return {m: {q: _num(float(row[f"{m}_{q}"])) for q, _ in QUANTILES} for m in METRICS}


def build_outputs(run: SimRun) -> SimOutputs:
    """Summary, tables and run information of a finished simulation."""
    eng, world, b = run.engine, run.world, run.backends
    zones, sites, workloads = world.zones, world.sites, [str(w) for w in world.ds.workload.values]
    cz, cb = eng.cz, eng.cb
    zc = {"arrivals": cz[k.CZ_ARRIVALS], "served": cz[k.CZ_SERVED], "rejected": eng.rej.sum(axis=2),
          "lost": cz[k.CZ_LOST], "in_flight": cz[k.CZ_INFLIGHT], "slo_met": cz[k.CZ_MET]}
    for r, name in enumerate(REASONS[1:], start=1):
        zc[f"rejected_{name}"] = eng.rej[:, :, r]
    by_zone = _group_table("zone", zones, workloads, zc, eng.hz, ("arrivals", "in_flight"), k.ZONE_COARSEN)
    by_workload = _group_table("scope", ["all"], workloads, {n: v.sum(axis=0, keepdims=True) for n, v in zc.items()},
                               eng.hbk.sum(axis=0, keepdims=True), ("arrivals", "in_flight")).drop(columns="scope")
    site_of = np.zeros((len(b), len(sites)))
    site_of[np.arange(len(b)), b.site] = 1.0
    used = np.flatnonzero(site_of.sum(axis=0) > 0)

    def per_site(a: NDArray[Any]) -> NDArray[Any]:  # [..., backend, ...] on axis 0 -> [site, ...]
        return np.tensordot(site_of.T, a, axes=(1, 0))[used]

    rej_site = eng.hrej[:, :-1, :].sum(axis=0)[used]  # [site, W]
    sc = {"admitted": cb[k.CB_ADMITTED], "served": cb[k.CB_SERVED], "lost": cb[k.CB_LOST],
          "in_flight": cb[k.CB_INFLIGHT], "slo_met": cb[k.CB_MET]}
    sc = {n: np.rint(per_site(v)).astype(np.int64) for n, v in sc.items()}
    sc["rejected"] = rej_site
    hist_site = np.rint(per_site(eng.hbk)).astype(np.int64)
    by_site = _group_table("site", [sites[i] for i in used], workloads, sc, hist_site, ("admitted", "in_flight"))

    n_h = eng.hb.shape[1]
    hour_len = np.minimum(3600.0, run.horizon_s - 3600.0 * np.arange(n_h)) / 3600.0
    nominal = run.slots[None, :] * hour_len[:, None] * 3600.0
    parts = energy_by_backend(world, (b.replicas * b.tp).astype(np.float64), b.chips, b.site, eng.hb[k.HB_BUSY],
                              run.capacity_s, nominal)
    foot = footprint_totals(parts, hour_len)
    busy_site = per_site(eng.hb[k.HB_BUSY].T).T  # [hour, site]
    cap_site = per_site(run.capacity_s.T).T
    timeline = pd.DataFrame({
        "hour": np.repeat(np.arange(n_h), len(used)),
        "site": np.tile(np.array([sites[i] for i in used], dtype=object), n_h),
        "served": np.rint(per_site(eng.hb[k.HB_SERVED].T).T).astype(np.int64).ravel(),
        "rejected": eng.hrej[:, used, :].sum(axis=2).ravel(),
        "lost": np.rint(per_site(eng.hb[k.HB_LOST].T).T).astype(np.int64).ravel(),
        "utilization": np.divide(busy_site, cap_site, out=np.zeros_like(busy_site), where=cap_site > 0).ravel(),
        **{name: per_site(v.T).T.ravel() for name, v in foot.items()},
    })
    util_total = np.divide(busy_site.sum(0), cap_site.sum(0), out=np.zeros(len(used)), where=cap_site.sum(0) > 0)
    tables = {"timeline": timeline, "by_zone": by_zone, "by_site": by_site, "by_workload": by_workload}
    summary = _summary(run, by_workload, zc, workloads, {sites[i]: float(u) for i, u in zip(used, util_total,
                                                                                              strict=True)}, foot)
    if run.spread is not None:
        summary["trace"], tables["requests"] = _trace_accounting(run)
    info = {"wall_s": run.wall_s, "requests": run.requests,
            "requests_per_s": run.requests / run.wall_s if run.wall_s > 0 else None,
            "compiled": k.COMPILED, "backends": len(b)}
    return SimOutputs(summary=summary, tables=tables, run_info=info)


def _served_share(zc: dict[str, i8], workloads: list[str]) -> dict[str, float]:
    """Per workload (and ``all``): served / (arrivals - in flight at the end), the simulator's counterpart of
    the plan's served share."""
    out: dict[str, float] = {}
    for i, w in enumerate([*workloads, "all"]):
        pick = (slice(None), slice(None)) if w == "all" else (slice(None), i)
        done = int(zc["arrivals"][pick].sum() - zc["in_flight"][pick].sum())
        if done > 0:
            out[w] = int(zc["served"][pick].sum()) / done
    return out


def _deadline_missed(run: SimRun, zc: dict[str, i8], workloads: list[str]) -> dict[str, int]:
    """Per batch workload: requests that missed their deadline (served late, or expired in the queue)."""
    kind = run.world.ds.workload_kind.values
    return {w: int(zc["served"][:, i].sum() - zc["slo_met"][:, i].sum() + zc["rejected_expired"][:, i].sum())
            for i, w in enumerate(workloads) if kind[i] == "batch"}


def _summary(run: SimRun, by_workload: pd.DataFrame, zc: dict[str, i8], workloads: list[str],
             utilization: dict[str, float], foot: dict[str, NDArray[np.float64]]) -> dict[str, Any]:
    tot = {n: int(v.sum()) for n, v in zc.items()}
    rows = {str(r["workload"]): r for _, r in by_workload.iterrows()}
    slo = {w: float(r["slo_attainment"]) for w, r in rows.items() if np.isfinite(r["slo_attainment"])}
    f = run.sample
    return {
        "schema": SIM_SCHEMA,
        "plan": {"path": str(run.plan_path), "scenario_sha256": run.doc.scenario.sha256},
        "period": run.backends.period,
        "hours": run.horizon_s / 3600.0,
        "seed": run.config.seed,
        "traffic": run.traffic,
        "shocks": run.timeline.labels,
        "requests": {"arrivals": tot["arrivals"], "served": tot["served"], "rejected": tot["rejected"],
                     "lost": tot["lost"], "in_flight": tot["in_flight"]},
        "rejections": {name: tot[f"rejected_{name}"] for name in REASONS[1:]},
        "slo_attainment": slo,
        "served_share": _served_share(zc, workloads),
        "deadline_missed": _deadline_missed(run, zc, workloads),
        "latency_s": {w: _latency(rows[w]) for w in workloads if rows[w]["served"] > 0},
        "residency_violations": residency_violations(run.world, run.engine.routed),
        "utilization": utilization,
        "energy_mwh": float(foot["energy_mwh"].sum()),
        "water_m3": float(foot["water_m3"].sum()),
        "carbon_t": float(foot["carbon_t"].sum()),
        "cost_usd": float(foot["cost_usd"].sum()),
        "sample": f,
        "counts": "simulated requests (sampled); full_scale divides by sample. Latency, SLO attainment and "
                  "utilization are scale free; energy, water, carbon and cost (electricity) are full scale",
        "full_scale": {n: tot[n] / f for n in ("arrivals", "served", "rejected", "lost", "in_flight")},
        "start_hour_utc": run.start_hour,
        "tick_s": run.config.tick_s,
        "queue_factor": run.config.queue_factor,
        "burstiness": run.config.burstiness if run.spread is None else None,
        "backends": len(run.backends),
        "routing_cut": run.routing_cut,
    }


def _trace_accounting(run: SimRun) -> tuple[dict[str, Any], pd.DataFrame]:
    sp, tr = run.spread, run.trace
    if sp is None or tr is None:  # pragma: no cover - called for trace runs only
        raise ValueError("not a trace run")
    names = {k.OUT_SERVED: "served", k.OUT_LOST: "lost", k.OUT_INFLIGHT: "in_flight", 0: "unaccounted"}
    names.update({k.OUT_REJECTED + r: f"rejected:{n}" for r, n in enumerate(REASONS)})
    outcome = run.engine.outcome[sp.requests.rid]
    first = sp.row >= 0
    labels = pd.Categorical([names.get(int(o), "unaccounted") for o in outcome[first]])
    r = sp.requests
    w_names = np.array([str(w) for w in run.world.ds.workload.values], dtype=object)
    frame = pd.DataFrame({"row": sp.row[first], "t_s": r.t[first],
                          "zone": np.array(run.world.zones, dtype=object)[r.zone[first]],
                          "model": np.array(run.table.models, dtype=object)[r.model[first]],
                          "workload": w_names[r.workload[first]], "input_tokens": r.inp[first],
                          "output_tokens": r.out[first], "outcome": labels}).sort_values("row", kind="stable")
    counts = frame["outcome"].value_counts()
    block = {"name": tr.name, "format": tr.format, "path": str(tr.path), "rows": sp.rows,
             "replayed": int(first.sum()), "outside_window": sp.outside_window, "surge_added": sp.surge_added,
             "surge_thinned": sp.surge_thinned, "scale": run.config.trace_scale,
             "rows_by_outcome": {str(n): int(c) for n, c in counts.items() if c > 0}}
    return block, frame.reset_index(drop=True)


def write_outputs(out: SimOutputs, folder: Path) -> list[Path]:
    """Write summary.json, run.json and the Parquet tables; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "summary.json", folder / "run.json"]
    paths[0].write_text(json.dumps(out.summary, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(json.dumps(out.run_info, indent=2) + "\n", encoding="utf-8")
    for name, frame in out.tables.items():
        p = folder / f"{name}.parquet"
        frame.to_parquet(p, index=False)
        paths.append(p)
    return paths


def print_summary(out: SimOutputs, console: Console) -> None:
    """A short terminal summary of a simulation."""
    s = out.summary
    req = s["requests"]
    t = Table(title=f"simulation: {s['traffic']}, {s['hours']:g} h, period {s['period']}, sample {s['sample']:.3g}",
              show_header=True)
    for col in ("workload", "SLO met", "TTFT p50/p99 s", "TPOT p50/p99 s", "E2E p50/p99 s"):
        t.add_column(col)
    for w, lat in s["latency_s"].items():
        cells = [f"{lat[m]['p50'] or 0:.3g} / {lat[m]['p99'] or 0:.3g}" for m in METRICS]
        t.add_row(w, f"{s['slo_attainment'].get(w, float('nan')):.1%}", *cells)
    console.print(t)
    rej = ", ".join(f"{n} {c:,}" for n, c in s["rejections"].items() if c)
    console.print(f"requests {req['arrivals']:,}: served {req['served']:,}, rejected {req['rejected']:,}"
                  f"{f' ({rej})' if rej else ''}, lost {req['lost']:,}, in flight {req['in_flight']:,}; "
                  f"SLO attainment {s['slo_attainment'].get('all', 0.0):.1%}; residency violations "
                  f"{s['residency_violations']}", markup=False, highlight=False)
    console.print(f"energy {s['energy_mwh']:,.1f} MWh, water {s['water_m3']:,.0f} m3, carbon {s['carbon_t']:,.1f} t, "
                  f"electricity ${s['cost_usd']:,.0f} (full scale); {out.run_info['requests']:,} requests "
                  f"simulated in {out.run_info['wall_s']:.1f} s", markup=False, highlight=False)
