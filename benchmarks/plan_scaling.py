"""How the buildout plan scales: instances from 1x to 10x the default (sites, zones).

Run: ``python benchmarks/plan_scaling.py [--factors 1 2 5 10] [--time-limit 60] [--out FILE.md]``

Instance ``k`` (:func:`scaled_scenario`) has ``k`` copies of every site (ids ``<id>-k2`` ...,
coordinates jittered deterministically by up to 1.5 degrees so round-trip times differ; same
country, options, caps, installed power and chips; candidate sites too) and every demand zone
split into ``k`` zones of population/k (ids ``<id>-k2`` ..., jittered likewise; same country and
time zone). Total demand is unchanged, so the problem grows in sites x zones, not in demand.

Each instance runs in a fresh subprocess (``--one k``) so that its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own. The child records the model size, the stage
timings of :func:`sovcloud.plan.make.make_plan` (compile + planner inputs, model build, solve: HiGHS
conversion, LP relaxation, warm start, MILP, duals; extract), objective, bound, gap, status, the
stage that produced the plan, and the served share of demand. When the MILP solve raises, the
error text is recorded and the greedy baseline is run on the same instance, so a feasible plan
and its cost are still reported (marked ``greedy`` in the table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sovcloud.plan.make import Plan, PlanOptions, make_plan
from sovcloud.scenario.demand import DemandZone
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.sites import Site

ROOT = Path(__file__).resolve().parents[1]
JITTER_DEG = 1.5


def _jitter(key: str, copy: int) -> tuple[float, float]:
    """Deterministic (dlat, dlon) in [-JITTER_DEG, JITTER_DEG] for copy ``copy`` of ``key``."""
    rng = np.random.default_rng(zlib.crc32(f"{key}#{copy}".encode()))
    dlat, dlon = rng.uniform(-JITTER_DEG, JITTER_DEG, size=2)
    return float(dlat), float(dlon)


def _moved(lat: float, lon: float, key: str, copy: int) -> tuple[float, float]:
    dlat, dlon = _jitter(key, copy)
    new_lon = (lon + dlon + 180.0) % 360.0 - 180.0
    return round(float(np.clip(lat + dlat, -89.9, 89.9)), 4), round(new_lon, 4)


def _site_copies(site: Site, k: int) -> list[Site]:
    out = [site]
    for j in range(2, k + 1):
        lat, lon = _moved(site.lat, site.lon, site.id, j)
        out.append(site.model_copy(update={"id": f"{site.id}-k{j}", "name": f"{site.name} (copy {j})",
                                           "lat": lat, "lon": lon}))
    return out


def _zone_split(zone: DemandZone, k: int) -> list[DemandZone]:
    """``k`` zones whose populations (and explicit users) sum exactly to the original's."""
    base, rest = divmod(zone.population, k)
    out = []
    for j in range(1, k + 1):
        update: dict[str, Any] = {"population": base + (1 if j <= rest else 0)}
        if zone.users is not None:
            update["users"] = zone.users / k
        if j > 1:
            lat, lon = _moved(zone.lat, zone.lon, zone.id, j)
            update |= {"id": f"{zone.id}-k{j}", "name": f"{zone.name} ({j})", "lat": lat, "lon": lon}
        out.append(zone.model_copy(update=update))
    return out


def scaled_scenario(base: Scenario, k: int) -> Scenario:
    """``base`` with k copies of every site and every zone split into k (see module docstring)."""
    if k < 1:
        raise ValueError(f"factor must be >= 1, got {k}")
    if k == 1:
        return base
    if not base.demand.zones:
        raise ValueError("the base scenario has no explicit zones; load it with load_scenario() first")
    sites = [c for s in base.sites for c in _site_copies(s, k)]
    zones = [z for zone in base.demand.zones for z in _zone_split(zone, k)]
    return base.model_copy(update={
        "name": f"{base.name}-x{k}", "sites": sites,
        "demand": base.demand.model_copy(update={"zones": zones}),
    })


# ---------------------------------------------------------------------------------------------
# one instance (child process)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _plan_record(plan: Plan) -> dict[str, Any]:
    r = plan.result
    m = plan.built_model.model
    a = plan.arrays
    served = float(a.served_mtok_day.sum())
    unserved = float(a.unserved_mtok_day.sum())
    return {
        "nvars": int(m.nvars), "ncons": int(m.ncons),
        "groups": int(sum(len(d.ds.group) for d in plan.inputs.demand.values())),
        "routes_k": int(plan.inputs.ds.attrs.get("routes_pruned_to", 0)),
        "route_pairs": int(sum(int(d.ds.route.values.sum()) for d in plan.inputs.demand.values())),
        "timings": dict(plan.timings), "solver_timings": dict(r.timings),
        "status": r.status, "source": r.source, "objective": r.objective,
        "bound": r.bound, "gap": r.gap,
        "served_share": served / (served + unserved) if served + unserved > 0 else float("nan"),
    }


def run_one(k: int, time_limit: float, mip_gap: float) -> dict[str, Any]:
    sc = scaled_scenario(load_scenario(), k)
    rec: dict[str, Any] = {"k": k, "sites": len(sc.sites), "zones": len(sc.demand.zones), "error": None}
    t = time.perf_counter()
    try:
        plan = make_plan(sc, PlanOptions(time_limit_s=time_limit, mip_gap=mip_gap))
    except Exception as exc:  # recorded honestly; the greedy baseline still gives a feasible plan
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["error_trace"] = traceback.format_exc(limit=3)
        rec["failed_wall_s"] = time.perf_counter() - t
        rec["failed_peak_rss_mib"] = _peak_rss_mib()
        t = time.perf_counter()
        plan = make_plan(sc, PlanOptions(solver="greedy"))
        rec |= _plan_record(plan)
        # the greedy row shows no MILP stages: its solve time is the decisions + the fixed-plan LP
        rec["greedy_solve_s"] = plan.timings["solve_s"]
        rec["solver_timings"] = {}
        rec["status"] = f"fixed LP {plan.result.status}"
        rec["source"] = "greedy"
    else:
        rec |= _plan_record(plan)
    rec["wall_s"] = time.perf_counter() - t
    rec["peak_rss_mib"] = _peak_rss_mib()
    return rec


# ---------------------------------------------------------------------------------------------
# driver


def _machine() -> dict[str, str]:
    cpu = "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("sovcloud", "linopy", "highspy", "xarray", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "?"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        rev = head + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "ram": mem, "python": platform.python_version(),
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items()), "rev": rev}


def _child(k: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(k), "--time-limit", str(args.time_limit),
               "--mip-gap", str(args.mip_gap), "--json-out", str(out)]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout)
        except subprocess.TimeoutExpired:
            return {"k": k, "error": f"child killed after {args.child_timeout:.0f} s wall (--child-timeout)",
                    "wall_s": time.perf_counter() - t}
        if out.exists():
            rec: dict[str, Any] = json.loads(out.read_text())
            return rec
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        return {"k": k, "error": f"child exited {proc.returncode} without a result: " + " | ".join(tail),
                "wall_s": time.perf_counter() - t}


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


COLUMNS = ["k", "sites", "zones", "groups", "route pairs", "routes K", "vars", "cons", "compile s", "build s",
           "to HiGHS s", "LP s", "warm s", "MILP s", "duals s", "solve s", "total s", "build share",
           "objective US$M", "bound US$M", "gap", "status", "plan from", "served", "peak RSS MiB"]


def _row(r: dict[str, Any]) -> list[str]:
    t, st = r.get("timings", {}), r.get("solver_timings", {})
    total = sum(t.values()) if t else None
    return [
        str(r["k"]), _f(r.get("sites"), "d"), _f(r.get("zones"), "d"), _f(r.get("groups"), "d"),
        _f(r.get("route_pairs"), ",d"), _f(r.get("routes_k"), "d"),
        _f(r.get("nvars"), ",d"), _f(r.get("ncons"), ",d"), _f(t.get("compile_s"), ".1f"), _f(t.get("build_s"), ".1f"),
        _f(st.get("to_highs_s"), ".1f"), _f(st.get("lp_s"), ".1f"), _f(st.get("warm_start_s"), ".1f"),
        _f(st.get("milp_s"), ".1f"), _f(st.get("duals_s"), ".1f"), _f(t.get("solve_s"), ".1f"), _f(total, ".1f"),
        _f(t["build_s"] / total if total else None, ".1%"), _f(r.get("objective"), ",.1f"),
        _f(r.get("bound"), ",.1f"), _f(r.get("gap"), ".2%"), str(r.get("status", "-")), str(r.get("source", "-")),
        _f(r.get("served_share"), ".2%"), _f(r.get("peak_rss_mib"), ",.0f"),
    ]


def _markdown(results: list[dict[str, Any]], args: argparse.Namespace, command: str, started: str,
              mach: dict[str, str]) -> str:
    lines = [
        "## Plan scaling", "",
        f"Command: `{command}`  ",
        f"Date: {started}  ",
        f"Machine: {mach['nproc']} cores, {mach['cpu']}, {mach['ram']} RAM; Python {mach['python']}  ",
        f"Versions: {mach['versions']}; code at {mach['rev']}  ",
        f"Settings: time limit {args.time_limit:g} s, MIP gap {args.mip_gap:g}, HiGHS threads 2 (solver default)", "",
        "Instance k: k copies of every site (jittered up to 1.5 degrees) and every demand zone split into k "
        "(population/k, jittered), so total demand is unchanged and the model grows in sites x zones. "
        "`groups` is the number of demand groups over all workloads after the planner's exact merging, "
        "`route pairs` the (group, site) pairs kept, `routes K` the nearest-site pruning (0 = exact model). "
        "Times are wall seconds: compile = compile + planner inputs, build = linopy model, solve = HiGHS "
        "conversion + LP relaxation + rounding warm start + MILP + fixed-plan duals; total also counts extraction. "
        "Gap = (objective - bound) / objective. Peak RSS is `ru_maxrss` of the instance's own process.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c not in ("status", "plan from") else "---" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    notes = [r for r in results if r.get("error")]
    if notes:
        lines += ["", "MILP failures (the row then shows the greedy baseline's plan on the same instance):", ""]
        for r in notes:
            extra = ""
            if "failed_wall_s" in r:
                extra = (f" after {r['failed_wall_s']:.1f} s wall (peak RSS {r['failed_peak_rss_mib']:,.0f} MiB at"
                         " that point)")
            if "greedy_solve_s" in r:
                extra += (f"; greedy baseline instead: decisions + fixed-plan LP {r['greedy_solve_s']:.1f} s, "
                          f"objective US${r['objective']:,.1f}M, no bound (the LP relaxation did not finish)")
            lines.append(f"- k={r['k']}: `{r['error']}`{extra}")
    one = next((r for r in results if r["k"] == 1 and r.get("timings") and not r.get("error")), None)
    if one:
        t, st = one["timings"], one["solver_timings"]
        total = sum(t.values())
        lines += [
            "", "Default scenario (k = 1): "
            f"build {t['build_s']:.1f} s ({t['build_s'] / total:.1%} of {total:.1f} s total; compile + inputs "
            f"{t['compile_s']:.1f} s), solve {t['solve_s']:.1f} s (LP {st.get('lp_s', 0):.1f} s, warm start "
            f"{st.get('warm_start_s', 0):.1f} s, MILP {st.get('milp_s', 0):.1f} s), objective "
            f"US${one['objective']:,.2f}M, bound US${one['bound']:,.2f}M, gap {one['gap']:.2%} "
            f"({'within' if one['gap'] <= args.mip_gap + 1e-9 else 'NOT within'} {args.mip_gap:.0%}; "
            f"plan from {one['source']}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--factors", type=int, nargs="+", default=[1, 2, 5, 10], help="scale factors k")
    p.add_argument("--time-limit", type=float, default=60.0, help="solver time limit per instance, s")
    p.add_argument("--mip-gap", type=float, default=0.01, help="relative MIP gap")
    p.add_argument("--child-timeout", type=float, default=1800.0, help="wall limit per instance process, s")
    p.add_argument("--out", type=Path, default=Path("-"), help="also write the table as markdown to this file "
                   "(default '-': print only; docs/benchmarks.md keeps the current figures)")
    p.add_argument("--append", action="store_true", help="append this run's section to --out instead of replacing it")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one is not None:
        rec = run_one(args.one, args.time_limit, args.mip_gap)
        text = json.dumps(rec, default=float)
        if args.json_out:
            args.json_out.write_text(text)
        else:
            print(text)
        return

    command = "python benchmarks/plan_scaling.py" + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "")
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    mach = _machine()  # before the runs: the code revision measured, not the one at the end
    results = []
    print(" | ".join(COLUMNS))
    for k in args.factors:
        rec = _child(k, args)
        results.append(rec)
        print(" | ".join(_row(rec)), flush=True)
        if rec.get("error"):
            print(f"  k={k}: {rec['error']}", flush=True)
    md = _markdown(results, args, command, started, mach)
    if str(args.out) != "-":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.append and args.out.exists():
            section = md.replace("## Plan scaling", "### Another run", 1)
            md = args.out.read_text().rstrip("\n") + "\n\n" + section
        args.out.write_text(md)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
