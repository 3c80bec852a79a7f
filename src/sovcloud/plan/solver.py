"""Solving the buildout MILP with HiGHS, behind a neutral result type.

Branch-and-bound on these models stalls at the root, so the solve has three stages, then a fourth:

1. **LP relaxation** (integrality dropped), by dual simplex up to 300k columns: on the default
   scenario it took 2.6 s against 9.3 s for interior point without crossover; larger models use
   interior point without crossover (``lp_method`` forces either). It gets 60% of the time limit.
   Its objective is a valid lower bound on the MILP optimum. When it does not finish, a
   ``fallback`` plan (integer decisions decided elsewhere), costed on the LP with them fixed, is
   the incumbent instead and the bound comes from the MILP alone.
2. **Rounding warm start**: integer columns are rounded (up, then to nearest, then down, with site
   openings kept wherever the relaxation used them; last down, with only the sites it opened
   fully), fixed, and the remaining LP is re-solved; the first feasible rounding is kept (rounding
   down is always feasible: unserved demand absorbs the lost capacity). ``improve`` applied to it
   gives a second candidate; the better one is the incumbent.
3. **MILP** with that incumbent given to HiGHS (``setSolution``), the time left and a relative gap.
4. **Values and duals**: the LP with the plan's integer decisions fixed gives the plan's continuous values;
   the LP with only its binary decisions (site openings) fixed, server counts continuous, gives the shadow
   prices: what one more unit of each limit (a MW at a site, a dollar of budget, a server of supply) is
   worth at the margin. With the server counts fixed too, binding limits would read about zero.

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

__all__ = ["Fallback", "Improver", "SolveResult", "evaluate", "solve", "solve_fixed"]

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
    source: str = "milp"  # which stage produced the plan: milp | warm-start | fallback | lp | fixed | greedy

    def __getitem__(self, name: str) -> xr.DataArray:
        return self.values[name]


def evaluate(model: linopy.Model, values: dict[str, xr.DataArray], expr: linopy.LinearExpression) -> float:
    """The value of ``expr`` (a linear expression of ``model``) at the solution ``values``."""
    x = np.zeros(int(model._xCounter))
    for name, var in model.variables.items():
        if name not in values:
            continue
        labels = var.labels.values
        val = values[name].reindex_like(var.labels).values if values[name].shape != labels.shape \
            else values[name].values
        ok = labels >= 0
        x[labels[ok]] = np.nan_to_num(np.asarray(val, dtype=np.float64)[ok])
    vars_ = np.asarray(expr.vars.values)
    coeffs = np.asarray(expr.coeffs.values)
    used = vars_ >= 0
    const = float(np.nansum(np.asarray(expr.const.values)))
    return float((coeffs[used] * x[vars_[used]]).sum()) + const


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


#: a feasible plan: (objective, HiGHS column values)
_Candidate = tuple[float, NDArray[np.float64]]


@dataclass(frozen=True)
class _Columns:
    """The HiGHS columns of a linopy model: labels, variable names, integer columns and bounds."""

    vlabels: NDArray[np.int64]  # linopy label of each column
    names: NDArray[np.str_]  # variable name of each column
    integer: NDArray[np.int64]  # indices of the integer columns
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]

    @property
    def n(self) -> int:
        return len(self.lower)

    def clip(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """``values`` of the integer columns within their bounds."""
        return np.clip(values, self.lower[self.integer], self.upper[self.integer])


def _open(model: linopy.Model, threads: int) -> highspy.Highs:
    try:
        return _highs(model, threads)
    except Exception as exc:  # HiGHS/linopy conversion errors are translated at this boundary
        raise SolveError(f"could not pass the model to HiGHS: {exc}") from exc


def _columns_of(model: linopy.Model, h: highspy.Highs) -> _Columns:
    lp = h.getLp()
    n = lp.num_col_
    integrality = np.array(lp.integrality_, dtype=object)
    is_int = np.array([str(v).endswith("kInteger") for v in integrality]) if len(integrality) else np.zeros(n, bool)
    vlabels = np.asarray(model.matrices.vlabels)
    return _Columns(vlabels=vlabels, names=_column_names(model, vlabels),
                    integer=np.flatnonzero(is_int).astype(np.int64),
                    lower=np.array(lp.col_lower_, dtype=float), upper=np.array(lp.col_upper_, dtype=float))


def _set_integrality(h: highspy.Highs, cols: NDArray[np.int64], kind: highspy.HighsVarType) -> None:
    h.changeColsIntegrality(len(cols), cols, np.array([kind] * len(cols)))


def _overlay(model: linopy.Model, cols: _Columns, x: NDArray[np.float64],
             values: dict[str, xr.DataArray]) -> NDArray[np.float64]:
    """A copy of column vector ``x`` with the named variables set to ``values``."""
    out = x.copy()
    for name, vals in values.items():
        c, v = _columns(model, cols.vlabels, name, vals)
        out[c] = v
    return out


def _fix_and_solve(h: highspy.Highs, cols: _Columns, values: NDArray[np.float64]) -> _Candidate | None:
    """The LP with the integer columns fixed at ``values``: its plan, or None when it is not optimal."""
    ints = cols.integer
    h.changeColsBounds(len(ints), ints, values, values)
    h.setOptionValue("solver", "simplex")
    h.clearSolver()  # a cold start with presolve: 0.9 s against 9 s from the relaxation's basis here
    status = _run(h)
    out = None
    if status == "Optimal":
        out = (float(h.getInfo().objective_function_value), np.array(h.getSolution().col_value))
    h.changeColsBounds(len(ints), ints, cols.lower[ints], cols.upper[ints])
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
    end = t0 + time_limit_s
    timings: dict[str, float] = {}
    h = _open(model, threads)
    timings["to_highs_s"] = time.perf_counter() - t0
    cols = _columns_of(model, h)

    # 1. LP relaxation (or the fallback plan when it does not finish)
    t = time.perf_counter()
    status = _relax(h, cols, lp_method, time_limit_s)
    timings["lp_s"] = time.perf_counter() - t
    candidates: list[_Candidate] = []
    used_fallback = False
    if status == "Optimal":
        lp_bound = float(h.getInfo().objective_function_value)
        x_lp = np.array(h.getSolution().col_value)
    elif fallback is not None and len(cols.integer):
        lp_bound, x_lp = float("nan"), np.zeros(cols.n)
        candidates.append(_fallback_start(model, h, cols, fallback, status, end))
        used_fallback = True
    else:
        raise SolveError(f"the LP relaxation ended '{status}'; the model is infeasible or too large for the time limit")
    if not len(cols.integer):
        return _result(model, h, cols.vlabels, "Optimal", lp_bound, lp_bound, x_lp, timings, "lp", with_duals=True)

    # 2. rounding warm starts
    t = time.perf_counter()
    if not candidates:
        rounded = _rounding_start(h, cols, x_lp, binary_prefixes)
        candidates += [rounded] if rounded is not None else []
    if candidates and improve is not None:
        better = _improved_start(model, h, cols, candidates[0][1], improve)
        candidates += [better] if better is not None else []
    timings["warm_start_s"] = time.perf_counter() - t
    best = min(candidates, key=lambda c: c[0]) if candidates else None

    # 3. MILP from the incumbent
    t = time.perf_counter()
    status, found, mip_bound = _milp(h, cols, best, end, mip_gap)
    timings["milp_s"] = time.perf_counter() - t
    bound = np.nanmax([lp_bound, mip_bound]) if np.isfinite(mip_bound) else lp_bound
    obj, x, source = _pick(best, found, used_fallback, status)

    # the plan's continuous values with its integer decisions fixed; then the marginal values of every limit from
    # the LP with only the binary decisions (site openings) fixed: with server counts fixed too, a binding power
    # cap or budget is worth about nothing at the margin (no server could be added), which is not what it is worth
    t = time.perf_counter()
    _, x = _fixed_lp(h, cols, x)
    with_duals = _marginal_lp(h, cols, x, binary_prefixes)
    timings["duals_s"] = time.perf_counter() - t
    bound = min(bound, obj) if np.isfinite(bound) else float("nan")
    return _result(model, h, cols.vlabels, status, obj, bound, x, timings, source, with_duals=with_duals)


def _relax(h: highspy.Highs, cols: _Columns, lp_method: str, time_limit_s: float) -> str:
    """Solve the LP relaxation (integrality dropped) in 60% of the time limit; returns its status."""
    if len(cols.integer):
        _set_integrality(h, cols.integer, highspy.HighsVarType.kContinuous)
    if lp_method == "auto":  # dual simplex on small models; interior point scales better on large ones
        lp_method = "simplex" if cols.n <= IPM_ABOVE_COLUMNS else "ipm"
    h.setOptionValue("solver", lp_method)
    if lp_method == "ipm":
        h.setOptionValue("run_crossover", "off")
    if lp_method == "simplex":
        h.setOptionValue("simplex_strategy", 1)  # dual simplex
    _limit(h, max(1.0, 0.6 * time_limit_s))
    status = _run(h)
    h.setOptionValue("run_crossover", "on")
    return status


def _fallback_start(model: linopy.Model, h: highspy.Highs, cols: _Columns, fallback: Fallback, lp_status: str,
                    end: float) -> _Candidate:
    """The fallback's integer decisions, costed on the LP with them fixed (at least 30 s for it)."""
    x = _overlay(model, cols, np.zeros(cols.n), fallback())
    _limit(h, max(30.0, end - time.perf_counter()))
    sol = _fix_and_solve(h, cols, cols.clip(np.round(x[cols.integer])))
    if sol is None:
        raise SolveError(f"the LP relaxation ended '{lp_status}' and the fallback plan could not be costed "
                         f"(HiGHS '{h.modelStatusToString(h.getModelStatus())}'); raise --time-limit")
    return sol


def _rounding_start(h: highspy.Highs, cols: _Columns, x_lp: NDArray[np.float64],
                    binary_prefixes: tuple[str, ...]) -> _Candidate | None:
    """The first feasible rounding of the relaxation, in the order below (the MILP improves on it).

    Rounding up keeps every served token (capacity only grows) and usually fits the power and
    budget slack; rounding down is always feasible (unserved demand absorbs the loss) but costly.
    Site openings are kept wherever the relaxation used them, or (last) only where it opened them fully.
    """
    binary = np.isin(cols.names[cols.integer], binary_prefixes)
    frac = x_lp[cols.integer]
    opened = (frac > 1e-6).astype(float)
    roundings = [
        np.where(binary, opened, np.ceil(frac - 1e-6)),
        np.where(binary, opened, np.floor(frac + 0.5)),
        np.where(binary, opened, np.floor(frac + 1e-6)),
        np.where(binary, (frac > 1 - 1e-6).astype(float), np.floor(frac + 1e-6)),
    ]
    for values in roundings:
        sol = _fix_and_solve(h, cols, cols.clip(values))
        if sol is not None:
            return sol
    return None


def _improved_start(model: linopy.Model, h: highspy.Highs, cols: _Columns, x: NDArray[np.float64],
                    improve: Improver) -> _Candidate | None:
    """The plan ``x`` with ``improve``'s integer values, costed on the LP with them fixed."""
    better = _overlay(model, cols, x, improve(_values(model, cols.vlabels, x)))
    return _fix_and_solve(h, cols, cols.clip(better[cols.integer]))


def _milp(h: highspy.Highs, cols: _Columns, best: _Candidate | None, end: float,
          mip_gap: float) -> tuple[str, _Candidate | None, float]:
    """Branch-and-bound from the incumbent ``best`` until ``end``: (status, its plan or None, dual bound)."""
    _set_integrality(h, cols.integer, highspy.HighsVarType.kInteger)
    remaining = end - time.perf_counter()
    h.setOptionValue("solver", "choose")
    _limit(h, max(1.0, remaining))
    h.setOptionValue("mip_rel_gap", mip_gap)
    if best is not None:
        start = highspy.HighsSolution()
        start.col_value = list(best[1])
        start.value_valid = True
        h.setSolution(start)
    status = _run(h)
    found = _incumbent(h)
    if found is None and best is not None and h.getInfo().primal_solution_status == 2:
        # HiGHS reported an incumbent whose values it did not return (seen with a warm start that it
        # improved on): branch again from scratch for the rest of the time
        h.clearSolver()
        _limit(h, max(1.0, end - time.perf_counter()))
        status = _run(h)
        found = _incumbent(h)
    return status, found, float(h.getInfo().mip_dual_bound)


def _incumbent(h: highspy.Highs) -> _Candidate | None:
    """The MIP's plan and its objective, when HiGHS has one and its values cost what it reports."""
    info = h.getInfo()
    if info.primal_solution_status != 2:  # kSolutionStatusFeasible
        return None
    x = np.array(h.getSolution().col_value)
    lp = h.getLp()
    obj = float(np.dot(np.asarray(lp.col_cost_), x) + lp.offset_)
    reported = float(info.objective_function_value)
    if abs(obj - reported) > 1e-7 * max(1.0, abs(reported)):
        return None
    return obj, x


def _pick(best: _Candidate | None, found: _Candidate | None, used_fallback: bool,
          status: str) -> tuple[float, NDArray[np.float64], str]:
    """(objective, values, source) of the better of the warm start and the MILP's plan."""
    mip_obj = found[0] if found is not None else np.inf
    if best is not None and best[0] < mip_obj - 1e-9:
        return best[0], best[1], "fallback" if used_fallback else "warm-start"
    if found is not None:
        return found[0], found[1], "milp"
    raise SolveError(f"no feasible plan found (HiGHS status '{status}'); raise --time-limit")


def _marginal_lp(h: highspy.Highs, cols: _Columns, x: NDArray[np.float64], binary_prefixes: tuple[str, ...]) -> bool:
    """Solve the LP with only the binary columns fixed at ``x`` (servers continuous); True when its duals hold."""
    ints = cols.integer
    _set_integrality(h, ints, highspy.HighsVarType.kContinuous)
    h.changeColsBounds(len(ints), ints, cols.lower[ints], cols.upper[ints])
    binary = ints[np.isin(cols.names[ints], binary_prefixes)]
    if len(binary):
        v = np.round(x[binary])
        h.changeColsBounds(len(binary), binary, v, v)
    h.setOptionValue("solver", "simplex")
    h.clearSolver()
    _limit(h, 60.0)
    return _run(h) == "Optimal"


def _fixed_lp(h: highspy.Highs, cols: _Columns, x: NDArray[np.float64]) -> tuple[bool, NDArray[np.float64]]:
    """Re-solve the LP with the integer columns fixed at ``x`` (rounded): (duals available, values)."""
    rounded = np.round(x[cols.integer])
    _set_integrality(h, cols.integer, highspy.HighsVarType.kContinuous)
    h.changeColsBounds(len(cols.integer), cols.integer, rounded, rounded)
    h.setOptionValue("solver", "simplex")
    h.clearSolver()
    _limit(h, 60.0)
    if _run(h) != "Optimal":
        return False, x
    return True, np.array(h.getSolution().col_value)


def solve_fixed(model: linopy.Model, fixed: dict[str, xr.DataArray], *, threads: int = 2,
                source: str = "fixed") -> SolveResult:
    """Fix the named variables to ``fixed`` values (integrality dropped) and solve the remaining LP.

    Used to evaluate a plan decided elsewhere (the greedy baseline) on the same model and costs.
    """
    t0 = time.perf_counter()
    h = _highs(model, threads)
    lp = h.getLp()
    n = lp.num_col_
    _set_integrality(h, np.arange(n), highspy.HighsVarType.kContinuous)
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
