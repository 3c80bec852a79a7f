"""Solving the buildout MILP with HiGHS, behind a neutral result type.

Branch-and-bound on these models stalls at the root, so the solve has three stages:

1. **LP relaxation** (integrality dropped), by dual simplex up to 300k columns: on the default
   scenario it took 2.6 s against 9.3 s for interior point without crossover; larger models use
   interior point without crossover (``lp_method`` forces either).
   Its objective is a valid lower bound on the MILP optimum, and its basis warm-starts step 2.
2. **Rounding warm start**: integer columns are rounded (servers down, which keeps power, supply
   and budget feasible because unserved demand absorbs the lost capacity; site openings either
   kept wherever the relaxation used them or dropped), fixed, and the remaining LP is re-solved.
   The best feasible rounding is an incumbent.
3. **MILP** with that incumbent given to HiGHS (``setSolution``), a time limit and a relative gap.

The result reports the objective of the best plan, the best bound (the MILP's dual bound, or the
LP bound when branch-and-bound produced nothing better) and the gap between them, honestly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import highspy
import linopy
import numpy as np
import xarray as xr
from numpy.typing import NDArray

from sovcloud.errors import SolveError

__all__ = ["Fallback", "Improver", "SolveResult", "solve", "solve_fixed"]

#: models with more columns than this solve their LP relaxation by interior point (no crossover)
IPM_ABOVE_COLUMNS = 300_000

#: maps a feasible plan's values per variable to better values for some integer variables
Improver = Callable[[dict[str, xr.DataArray]], dict[str, xr.DataArray]]
#: integer decisions to fall back on (values per variable name)
Fallback = Callable[[], dict[str, xr.DataArray]]


@dataclass(frozen=True)
class SolveResult:
    """Solver-neutral outcome: values per variable name, objective, bound, gap and timings."""

    status: str
    objective: float
    bound: float
    gap: float
    values: dict[str, xr.DataArray]
    duals: dict[str, xr.DataArray]
    timings: dict[str, float] = field(default_factory=dict)
    source: str = "milp"  # which stage produced the plan: milp | warm-start

    def __getitem__(self, name: str) -> xr.DataArray:
        return self.values[name]


class _Deadline:
    """Wall-clock deadline enforced through HiGHS's interrupt callbacks.

    HiGHS's own ``time_limit`` is not checked everywhere (a large MILP's root LP ran 70 s past it
    here), so the simplex, interior-point and MIP interrupt callbacks also stop at the deadline.
    """

    def __init__(self) -> None:
        self.at = float("inf")

    def __call__(self, event: object) -> None:
        # set the flag both ways: HiGHS keeps it between runs, so a past interrupt would stick
        event.interrupt(time.perf_counter() > self.at)  # type: ignore[attr-defined]


def _highs(model: linopy.Model, threads: int) -> highspy.Highs:
    h = model.to_highspy()
    h.setOptionValue("output_flag", False)
    # HiGHS keeps one global thread scheduler per process: a different thread count is an error
    # ("global scheduler has already been initialized") unless the scheduler is reset first
    highspy.Highs.resetGlobalScheduler(True)
    h.setOptionValue("threads", threads)
    deadline = _Deadline()
    h.cbSimplexInterrupt += deadline
    h.cbIpmInterrupt += deadline
    h.cbMipInterrupt += deadline
    setattr(h, "sovcloud_deadline", deadline)  # noqa: B010 - extends a foreign object; read in _limit
    return h


def _limit(h: highspy.Highs, seconds: float) -> None:
    """Allow the next run ``seconds``: HiGHS's time limit counts the object's run time so far."""
    h.setOptionValue("time_limit", float(h.getRunTime()) + seconds)
    deadline = getattr(h, "sovcloud_deadline", None)
    if deadline is not None:
        deadline.at = time.perf_counter() + seconds


def _run(h: highspy.Highs) -> str:
    h.run()
    status = str(h.modelStatusToString(h.getModelStatus()))
    return "Time limit reached" if status == "Interrupted by user" else status


def _fix_and_solve(h: highspy.Highs, cols: NDArray[np.int64], values: NDArray[np.float64],
                   lower: NDArray[np.float64], upper: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]] | None:
    h.changeColsBounds(len(cols), cols, values, values)
    h.setOptionValue("solver", "simplex")
    h.clearSolver()  # a cold start with presolve: 0.9 s against 9 s from the relaxation's basis here
    status = _run(h)
    out = None
    if status == "Optimal":
        out = (float(h.getInfo().objective_function_value), np.array(h.getSolution().col_value))
    h.changeColsBounds(len(cols), cols, lower[cols], upper[cols])
    return out


def solve(model: linopy.Model, *, time_limit_s: float = 60.0, mip_gap: float = 0.01, threads: int = 2,
          lp_method: str = "auto", binary_prefixes: tuple[str, ...] = ("opened",),
          improve: Improver | None = None, fallback: Fallback | None = None) -> SolveResult:
    """Solve ``model`` (see module docstring) within ``time_limit_s`` seconds in total.

    ``improve`` maps a feasible plan's variable values to better integer values (e.g. dropping
    servers the plan leaves idle); the improved rounding is tried as a second warm start.
    ``fallback`` gives integer decisions (e.g. the greedy baseline's) used as the incumbent when the
    LP relaxation does not finish in its share of the time; the bound then comes from the MILP
    alone and may be unknown (NaN), which the result says.
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        h = _highs(model, threads)
    except Exception as exc:  # HiGHS/linopy conversion errors are translated at this boundary
        raise SolveError(f"could not pass the model to HiGHS: {exc}") from exc
    timings["to_highs_s"] = time.perf_counter() - t0
    lp = h.getLp()
    n = lp.num_col_
    integrality = np.array(lp.integrality_, dtype=object)
    is_int = np.array([str(v).endswith("kInteger") for v in integrality]) if len(integrality) else np.zeros(n, bool)
    int_cols = np.flatnonzero(is_int).astype(np.int64)
    lower = np.array(lp.col_lower_, dtype=float)
    upper = np.array(lp.col_upper_, dtype=float)
    vlabels = np.asarray(model.matrices.vlabels)
    col_var = _column_names(model, vlabels)

    # 1. LP relaxation
    t = time.perf_counter()
    if len(int_cols):
        h.changeColsIntegrality(len(int_cols), int_cols,
                                np.array([highspy.HighsVarType.kContinuous] * len(int_cols)))
    if lp_method == "auto":  # dual simplex on small models; interior point scales better on large ones
        lp_method = "simplex" if n <= IPM_ABOVE_COLUMNS else "ipm"
    h.setOptionValue("solver", lp_method)
    if lp_method == "ipm":
        h.setOptionValue("run_crossover", "off")
    if lp_method == "simplex":
        h.setOptionValue("simplex_strategy", 1)  # dual simplex
    _limit(h, max(1.0, 0.6 * time_limit_s))
    status = _run(h)
    h.setOptionValue("run_crossover", "on")
    timings["lp_s"] = time.perf_counter() - t
    candidates: list[tuple[float, NDArray[np.float64]]] = []
    used_fallback = False
    if status == "Optimal":
        lp_bound = float(h.getInfo().objective_function_value)
        x_lp = np.array(h.getSolution().col_value)
    elif fallback is not None and len(int_cols):
        lp_bound = float("nan")
        x_lp = np.zeros(n)
        decided = fallback()
        for name, vals in decided.items():
            cols, v = _columns(model, vlabels, name, vals)
            x_lp[cols] = v
        _limit(h, max(30.0, time_limit_s - (time.perf_counter() - t0)))
        sol = _fix_and_solve(h, int_cols, np.clip(np.round(x_lp[int_cols]), lower[int_cols], upper[int_cols]),
                             lower, upper)
        if sol is None:
            raise SolveError(f"the LP relaxation ended '{status}' and the fallback plan could not be costed "
                             f"(HiGHS '{h.modelStatusToString(h.getModelStatus())}'); raise --time-limit")
        candidates.append(sol)
        used_fallback = True
    else:
        raise SolveError(f"the LP relaxation ended '{status}'; the model is infeasible or too large for the time limit")

    if not len(int_cols):
        return _result(model, h, vlabels, "Optimal", lp_bound, lp_bound, x_lp, timings, "lp", with_duals=True)

    # 2. rounding warm starts
    t = time.perf_counter()
    names = col_var[int_cols]
    binary = np.isin(names, binary_prefixes)
    frac = x_lp[int_cols]
    opened = (frac > 1e-6).astype(float)
    # rounding up keeps every served token (capacity only grows) and usually fits the power and
    # budget slack; rounding down is always feasible (unserved demand absorbs the loss) but costly.
    roundings = [
        np.where(binary, opened, np.ceil(frac - 1e-6)),
        np.where(binary, opened, np.floor(frac + 0.5)),
        np.where(binary, opened, np.floor(frac + 1e-6)),
        np.where(binary, (frac > 1 - 1e-6).astype(float), np.floor(frac + 1e-6)),
    ]
    for values in roundings if not candidates else []:
        sol = _fix_and_solve(h, int_cols, np.clip(values, lower[int_cols], upper[int_cols]), lower, upper)
        if sol is not None:
            candidates.append(sol)
            break  # the first feasible rounding in this order is kept; the MILP improves on it
    if candidates and improve is not None:
        better = improve(_values(model, vlabels, candidates[0][1]))
        x_new = candidates[0][1].copy()
        for name, vals in better.items():
            cols, v = _columns(model, vlabels, name, vals)
            x_new[cols] = v
        sol = _fix_and_solve(h, int_cols, np.clip(x_new[int_cols], lower[int_cols], upper[int_cols]), lower, upper)
        if sol is not None:
            candidates.append(sol)
    timings["warm_start_s"] = time.perf_counter() - t
    best = min(candidates, key=lambda c: c[0]) if candidates else None

    # 3. MILP from the incumbent
    t = time.perf_counter()
    h.changeColsIntegrality(len(int_cols), int_cols, np.array([highspy.HighsVarType.kInteger] * len(int_cols)))
    remaining = time_limit_s - (time.perf_counter() - t0)
    h.setOptionValue("solver", "choose")
    _limit(h, max(1.0, remaining))
    h.setOptionValue("mip_rel_gap", mip_gap)
    if best is not None:
        start = highspy.HighsSolution()
        start.col_value = list(best[1])
        start.value_valid = True
        h.setSolution(start)
    status = _run(h)
    timings["milp_s"] = time.perf_counter() - t
    info = h.getInfo()
    has_mip = info.primal_solution_status == 2  # kSolutionStatusFeasible
    mip_obj = float(info.objective_function_value) if has_mip else np.inf
    mip_bound = float(info.mip_dual_bound)
    bound = np.nanmax([lp_bound, mip_bound]) if np.isfinite(mip_bound) else lp_bound
    if best is not None and best[0] < mip_obj - 1e-9:
        obj, x, source = best[0], best[1], "fallback" if used_fallback else "warm-start"
    elif has_mip:
        obj, x, source = mip_obj, np.array(h.getSolution().col_value), "milp"
    else:
        raise SolveError(f"no feasible plan found (HiGHS status '{status}'); raise --time-limit")
    # duals of the LP with the integer decisions fixed at the plan: shadow prices of every limit
    t = time.perf_counter()
    rounded = np.round(x[int_cols])
    h.changeColsIntegrality(len(int_cols), int_cols, np.array([highspy.HighsVarType.kContinuous] * len(int_cols)))
    h.changeColsBounds(len(int_cols), int_cols, rounded, rounded)
    h.setOptionValue("solver", "simplex")
    h.clearSolver()
    _limit(h, 60.0)
    with_duals = _run(h) == "Optimal"
    if with_duals:
        x = np.array(h.getSolution().col_value)
    timings["duals_s"] = time.perf_counter() - t
    bound = min(bound, obj) if np.isfinite(bound) else float("nan")
    return _result(model, h, vlabels, status, obj, bound, x, timings, source, with_duals=with_duals)


def solve_fixed(model: linopy.Model, fixed: dict[str, xr.DataArray], *, threads: int = 2,
                source: str = "fixed") -> SolveResult:
    """Fix the named variables to ``fixed`` values (integrality dropped) and solve the remaining LP.

    Used to evaluate a plan decided elsewhere (the greedy baseline) on the same model and costs.
    """
    t0 = time.perf_counter()
    h = _highs(model, threads)
    lp = h.getLp()
    n = lp.num_col_
    h.changeColsIntegrality(n, np.arange(n), np.array([highspy.HighsVarType.kContinuous] * n))
    vlabels = np.asarray(model.matrices.vlabels)
    for name, values in fixed.items():
        cols, v = _columns(model, vlabels, name, values)
        h.changeColsBounds(len(cols), cols, v, v)
    h.setOptionValue("solver", "simplex")
    status = _run(h)
    if status != "Optimal":
        raise SolveError(f"the fixed plan could not be evaluated: HiGHS ended '{status}'")
    obj = float(h.getInfo().objective_function_value)
    x = np.array(h.getSolution().col_value)
    timings = {"lp_s": time.perf_counter() - t0}
    return _result(model, h, vlabels, status, obj, float("nan"), x, timings, source, with_duals=True)


def _columns(model: linopy.Model, vlabels: NDArray[np.int64], name: str,
             values: xr.DataArray) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """HiGHS columns of variable ``name`` and ``values`` aligned to them."""
    col_of = np.full(int(model._xCounter), -1, dtype=np.int64)
    col_of[vlabels] = np.arange(len(vlabels))
    labels = model.variables[name].labels
    vals = values.broadcast_like(labels).transpose(*labels.dims).values
    ok = labels.values >= 0
    cols = col_of[labels.values[ok]]
    keep = cols >= 0
    return cols[keep], np.nan_to_num(vals[ok][keep]).astype(float)


def _values(model: linopy.Model, vlabels: NDArray[np.int64], x: NDArray[np.float64]) -> dict[str, xr.DataArray]:
    """Values of every variable (NaN where masked) from a HiGHS column vector."""
    by_label = np.full(int(model._xCounter), np.nan)
    by_label[vlabels] = x
    return {name: xr.DataArray(np.where(var.labels.values >= 0, by_label[np.maximum(var.labels.values, 0)], np.nan),
                               coords=var.labels.coords, dims=var.labels.dims)
            for name, var in model.variables.items()}


def _column_names(model: linopy.Model, vlabels: NDArray[np.int64]) -> NDArray[np.str_]:
    """Variable name of each HiGHS column."""
    name_of_label = np.empty(int(model._xCounter), dtype=object)
    for name, var in model.variables.items():
        labels = var.labels.values.ravel()
        labels = labels[labels >= 0]
        name_of_label[labels] = name
    return np.asarray(name_of_label[vlabels].astype(str))


def _result(model: linopy.Model, h: highspy.Highs, vlabels: NDArray[np.int64], status: str, obj: float,
            bound: float, x: NDArray[np.float64], timings: dict[str, float], source: str,
            with_duals: bool) -> SolveResult:
    values = _values(model, vlabels, x)
    duals: dict[str, xr.DataArray] = {}
    if with_duals:
        clabels = np.asarray(model.matrices.clabels)
        row_dual = np.array(h.getSolution().row_dual)
        by_c = np.full(int(model._cCounter), np.nan)
        by_c[clabels] = row_dual
        for name, con in model.constraints.items():
            labels = con.labels
            duals[name] = xr.DataArray(np.where(labels.values >= 0, by_c[np.maximum(labels.values, 0)], np.nan),
                                       coords=labels.coords, dims=labels.dims)
    gap = abs(obj - bound) / max(abs(obj), 1e-9)
    timings["total_s"] = sum(v for k, v in timings.items() if k != "total_s")
    return SolveResult(status=status, objective=obj, bound=bound, gap=gap, values=values, duals=duals,
                       timings=timings, source=source)
