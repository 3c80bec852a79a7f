"""The plan checked by its own simulator: ``sovcloud plan --check`` and ``sovcloud verify``.

A plan claims a served share of demand per workload and per continent in each period; the check
replays its last (busiest) period for one representative day through :func:`sovcloud.sim.run.simulate`
and sets beside each claim what the replay served and how much of it met its SLO (batch: its deadline):

    planned      plan.json served_share[scope][period]
    served       served / (arrivals - in flight at the end)                 of the replay
    attainment   SLO met / (arrivals - in flight at the end)                (rejections count as misses)
    saturated    requests rejected because every compliant backend was full, / arrivals

The replay holds when, for every scope with demand, attainment >= ``target`` (0.95) x planned (of what the
plan says it serves, at least 95 % meets its SLO; demand the plan leaves unserved, e.g. where residency
allows no site, is not the replay's failure) and saturated < ``max_saturated`` (0.005); :attr:`PlanCheck.ok`
says so and :attr:`PlanCheck.failures` says where not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from rich.table import Table

from sovcloud.plan.summary import zone_continents
from sovcloud.routing.router import SATURATED
from sovcloud.sim import kernels as k
from sovcloud.sim.run import SimRun

__all__ = ["CheckRow", "PlanCheck", "check_run", "check_table"]


@dataclass(frozen=True)
class CheckRow:
    scope: str  # "workload" or "continent"
    name: str
    planned: float | None  # the plan's served share (None: not in the plan)
    served: float
    attainment: float
    saturated: float
    arrivals: int


@dataclass(frozen=True)
class PlanCheck:
    period: int
    rows: tuple[CheckRow, ...]
    target: float
    max_saturated: float

    @property
    def failures(self) -> list[str]:
        out = []
        for r in self.rows:
            if r.attainment < self.needed(r):
                out.append(f"{r.scope} {r.name}: SLO attainment {r.attainment:.1%} < {self.target:.0%} of the "
                           f"planned {1.0 if r.planned is None else r.planned:.1%}")
            if r.saturated >= self.max_saturated:
                out.append(f"{r.scope} {r.name}: {r.saturated:.2%} rejected as saturated >= {self.max_saturated:.1%}")
        return out

    def needed(self, row: CheckRow) -> float:
        """The attainment a scope must reach: ``target`` x its planned served share (1 when the plan has none)."""
        return self.target * (1.0 if row.planned is None else row.planned)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, object]:
        return {"period": self.period, "target": self.target, "max_saturated": self.max_saturated, "ok": self.ok,
                "failures": self.failures,
                "rows": [{"scope": r.scope, "name": r.name, "planned": r.planned, "served": r.served,
                          "attainment": r.attainment, "saturated": r.saturated, "arrivals": r.arrivals}
                         for r in self.rows]}


def _row(scope: str, name: str, planned: float | None, e: NDArray[np.int64], rej: NDArray[np.int64],
         zones: NDArray[np.bool_], w: slice | int) -> CheckRow | None:
    arrivals = int(e[k.CZ_ARRIVALS][zones][:, w].sum())
    done = arrivals - int(e[k.CZ_INFLIGHT][zones][:, w].sum())
    if done <= 0:
        return None
    served = int(e[k.CZ_SERVED][zones][:, w].sum())
    met = int(e[k.CZ_MET][zones][:, w].sum())
    sat = int(rej[zones][:, w, SATURATED].sum())
    return CheckRow(scope, name, planned, served / done, met / done, sat / arrivals, arrivals)


def _planned(served_share: dict[str, object], group: str, name: str, index: int | None) -> float | None:
    values = served_share.get(group)
    if not isinstance(values, dict) or index is None:
        return None
    v = values.get(name)
    return float(v[index]) if isinstance(v, list) and index < len(v) and v[index] is not None else None


def check_run(run: SimRun, *, target: float = 0.95, max_saturated: float = 0.005) -> PlanCheck:
    """Set the replay ``run`` beside the claims of its plan (module docstring)."""
    e, rej = run.engine.cz, run.engine.rej
    period = run.backends.period
    share = run.doc.raw.get("served_share") or {}
    periods = list(share.get("periods") or run.doc.periods) if isinstance(share, dict) else run.doc.periods
    index = periods.index(period) if period in periods else None
    every = np.ones(e.shape[1], dtype=bool)
    rows: list[CheckRow] = []
    for i, w in enumerate(str(x) for x in run.world.ds.workload.values):
        r = _row("workload", w, _planned(share, "by_workload", w, index), e, rej, every, i)
        if r is not None:
            rows.append(r)
    cont = zone_continents(run.world)
    for c in sorted(set(cont.tolist())):
        r = _row("continent", c, _planned(share, "by_continent", c, index), e, rej, cont == c, slice(None))
        if r is not None:
            rows.append(r)
    return PlanCheck(period=period, rows=tuple(rows), target=target, max_saturated=max_saturated)


def check_table(check: PlanCheck) -> Table:
    """The check as a terminal table: each claim of the plan beside the replay."""
    t = Table(title=f"plan vs its simulation, period {check.period} (one day)")
    for col in ("scope", "planned served", "simulated served", "SLO met", "saturated", "requests"):
        t.add_column(col, justify="left" if col == "scope" else "right")
    for r in check.rows:
        bad = r.attainment < check.needed(r) or r.saturated >= check.max_saturated
        style = "red" if bad else ""
        t.add_row(f"{r.scope} {r.name}", "–" if r.planned is None else f"{r.planned:.1%}", f"{r.served:.1%}",
                  f"{r.attainment:.1%}", f"{r.saturated:.2%}", f"{r.arrivals:,}", style=style)
    return t
