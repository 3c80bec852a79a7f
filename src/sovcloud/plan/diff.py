"""Two plans side by side: what changed, by how much, and the shortfalls and limits that explain it.

:func:`diff_plans` reads two plan folders (``plan.json`` and its Parquet tables, as ``sovcloud plan`` writes
them) and compares, for the last period both share and over the horizon:

    objective     discounted TCO + penalties (US$M) of each, and the difference
    sites         sites open in B and not in A, and the reverse (``opened`` or with chips in the last period)
    chips         fleet chips per (site, chip) in the last period, the pairs that changed, largest first
    spend         undiscounted spend per period (capex servers + sites, opex and lease, energy, renewables)
    served        served share per workload and per continent, per period
    latency       demand-weighted RTT p50 / p95 per workload
    footprint     energy, carbon and water per period
    why           shortfalls (binding limits with their shadow prices, missed renewable targets) that appear
                  only in A or only in B, keyed by what they are about ("Russia chat 2027")

``sovcloud diff A B`` prints it; :meth:`PlanDiff.to_json` is the same as data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from sovcloud.errors import PlanFileError
from sovcloud.vocab import PLAN_SCHEMA

__all__ = ["PlanDiff", "diff_plans", "print_diff"]


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    path = folder / "plan.json" if folder.is_dir() else folder
    base = path.parent
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no such plan file; give a folder written by `sovcloud plan --out DIR`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{path}: cannot read the plan ({exc}); write it again with `sovcloud plan`") from exc
    if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA:
        raise PlanFileError(f"{path}: schema: expected '{PLAN_SCHEMA}'; give a plan.json written by `sovcloud plan`")
    tables = {}
    for name in ("fleet", "sites", "costs"):
        p = base / f"{name}.parquet"
        if not p.exists():
            raise PlanFileError(f"{p}: missing; `sovcloud plan --out DIR` writes it beside plan.json")
        tables[name] = pd.read_parquet(p)
    return doc, tables


@dataclass(frozen=True)
class PlanDiff:
    a: str
    b: str
    period: int
    objective_musd: tuple[float, float]
    opened: list[str]  # open in B only
    closed: list[str]  # open in A only
    chips: pd.DataFrame  # site, chip, a, b, change (last period, changed pairs only)
    spend: pd.DataFrame  # period, a, b, change (US$M)
    served: pd.DataFrame  # scope, name, period, a, b, change
    latency: pd.DataFrame  # workload, a_p50, b_p50, a_p95, b_p95
    footprint: pd.DataFrame  # period, measure, a, b, change
    why_a: list[str] = field(default_factory=list)  # shortfalls only in A
    why_b: list[str] = field(default_factory=list)  # shortfalls only in B

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "period": self.period, "objective_musd": list(self.objective_musd),
                "opened": self.opened, "closed": self.closed,
                **{k: getattr(self, k).to_dict(orient="records")
                   for k in ("chips", "spend", "served", "latency", "footprint")},
                "only_in_a": self.why_a, "only_in_b": self.why_b}


def _open_sites(doc: dict[str, Any], fleet: pd.DataFrame, period: int) -> set[str]:
    opened = {s["site"] for s in doc["decisions"]["sites"] if s["period"] == period and s["opened"]}
    used = set(fleet[(fleet["period"] == period) & (fleet["fleet_chips"] > 0)]["site"])
    return opened | used


def _pair(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    out = a[[*keys, value]].merge(b[[*keys, value]], on=keys, how="outer", suffixes=("_a", "_b")).fillna(0.0)
    out = out.rename(columns={f"{value}_a": "a", f"{value}_b": "b"})
    out["change"] = out["b"] - out["a"]
    return out


def _served(doc: dict[str, Any]) -> pd.DataFrame:
    share = doc["served_share"]
    rows = [(scope, name, p, v) for scope, key in (("workload", "by_workload"), ("continent", "by_continent"))
            for name, values in share[key].items() for p, v in zip(share["periods"], values, strict=True)]
    return pd.DataFrame(rows, columns=["scope", "name", "period", "share"])


def diff_plans(a: Path | str, b: Path | str) -> PlanDiff:
    """Compare plan folders ``a`` and ``b`` (module docstring)."""
    da, ta = _read(Path(a))
    db, tb = _read(Path(b))
    common = sorted(set(da["periods"]) & set(db["periods"]))
    if not common:
        raise PlanFileError(f"{a} and {b} share no period ({da['periods']} vs {db['periods']}); compare plans of "
                            "one horizon")
    last = common[-1]
    fa, fb = (t["fleet"][t["fleet"]["period"] == last] for t in (ta, tb))
    chips = _pair(fa.groupby(["site", "chip"], as_index=False)["fleet_chips"].sum(),
                  fb.groupby(["site", "chip"], as_index=False)["fleet_chips"].sum(), ["site", "chip"], "fleet_chips")
    chips = chips[chips["change"].abs() > 1e-6].sort_values("change", key=abs, ascending=False)
    cost_cols = ["capex_servers_musd", "capex_sites_musd", "opex_lease_musd", "energy_musd", "renewables_musd"]
    ca, cb = (t["costs"].assign(spend=t["costs"][cost_cols].sum(axis=1)) for t in (ta, tb))
    spend = _pair(ca, cb, ["period"], "spend")
    served = _pair(_served(da), _served(db), ["scope", "name", "period"], "share")
    lat_a, lat_b = da.get("latency_ms_p50_p95", {}), db.get("latency_ms_p50_p95", {})
    latency = pd.DataFrame([{"workload": w, "a_p50": (lat_a.get(w) or [None, None])[0],
                             "b_p50": (lat_b.get(w) or [None, None])[0], "a_p95": (lat_a.get(w) or [None, None])[1],
                             "b_p95": (lat_b.get(w) or [None, None])[1]} for w in sorted(set(lat_a) | set(lat_b))])
    foot = []
    for measure in ("energy_mwh", "carbon_t", "water_m3"):
        ga, gb = (pd.DataFrame(t["sites"].groupby("period", as_index=False)[measure].sum()) for t in (ta, tb))
        pair = _pair(ga, gb, ["period"], measure)
        foot.append(pair.assign(measure=measure))
    open_a, open_b = _open_sites(da, ta["fleet"], last), _open_sites(db, tb["fleet"], last)
    # a shortfall is keyed by what it is about ("Russia chat 2027", "renewable target 2027"), not its figures
    sa, sb = ({x.split(":")[0] for x in d.get("shortfalls", [])} for d in (da, db))
    return PlanDiff(a=str(a), b=str(b), period=last,
                    objective_musd=(float(da["solver"]["objective_musd"] or 0.0),
                                    float(db["solver"]["objective_musd"] or 0.0)),
                    opened=sorted(open_b - open_a), closed=sorted(open_a - open_b), chips=chips.reset_index(drop=True),
                    spend=spend, served=served[served["change"].abs() > 5e-4].reset_index(drop=True),
                    latency=latency, footprint=pd.concat(foot, ignore_index=True),
                    why_a=[x for x in da.get("shortfalls", []) if x.split(":")[0] not in sb],
                    why_b=[x for x in db.get("shortfalls", []) if x.split(":")[0] not in sa])


def print_diff(d: PlanDiff, console: Console) -> None:
    """The comparison as terminal tables."""
    oa, ob = d.objective_musd
    console.print(f"[bold]A[/bold] {d.a}\n[bold]B[/bold] {d.b}\nobjective (discounted TCO + penalties): "
                  f"US${oa:,.1f}M -> US${ob:,.1f}M ({ob - oa:+,.1f}M, {(ob - oa) / oa if oa else 0.0:+.1%})",
                  highlight=False)
    console.print(f"sites open in {d.period}: only in B {', '.join(d.opened) or 'none'}; only in A "
                  f"{', '.join(d.closed) or 'none'}", highlight=False)
    _table(console, f"chips per site in {d.period} (changed pairs, largest first)", d.chips.head(20),
           ["site", "chip", "a", "b", "change"], "{:,.0f}")
    _table(console, "spend per period (US$M, undiscounted)", d.spend, ["period", "a", "b", "change"], "{:,.1f}")
    _table(console, "served share (changed by 0.05 points or more)", d.served,
           ["scope", "name", "period", "a", "b", "change"], "{:.2%}")
    _table(console, "footprint per period", d.footprint, ["period", "measure", "a", "b", "change"], "{:,.0f}")
    _table(console, "RTT of served demand (ms)", d.latency, ["workload", "a_p50", "b_p50", "a_p95", "b_p95"],
           "{:,.0f}")
    for label, items in (("only in A", d.why_a), ("only in B", d.why_b)):
        if items:
            console.print(f"shortfalls {label}:", highlight=False)
            for x in items[:15]:
                console.print(f"  - {x}", markup=False, highlight=False)


def _table(console: Console, title: str, frame: pd.DataFrame, cols: list[str], fmt: str) -> None:
    if frame.empty:
        console.print(f"{title}: no change", highlight=False)
        return
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="left" if frame[c].dtype == object else "right")
    for _, row in frame.iterrows():
        t.add_row(*[str(int(row[c])) if c == "period" else str(row[c]) if frame[c].dtype == object
                    else ("–" if pd.isna(row[c]) else fmt.format(row[c])) for c in cols])
    console.print(t)
