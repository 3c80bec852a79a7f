"""Deferred batch work: the per-key FIFO queues, and the serving discipline in whole simulations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sovcloud.plan.io import write_plan
from sovcloud.plan.make import make_plan
from sovcloud.routing.router import EXPIRED, SATURATED
from sovcloud.scenario.loader import load_scenario
from sovcloud.sim.deferred import BatchQueue
from sovcloud.sim.kernels import CZ_ARRIVALS, CZ_INFLIGHT, CZ_SERVED
from sovcloud.sim.output import build_outputs
from sovcloud.sim.run import SimConfig, SimRun, simulate
from tests.support.sim import conserved


def _queue(n_keys: int, capacity: int = 2) -> BatchQueue:
    keys = np.arange(n_keys, dtype=np.int64)
    return BatchQueue(keys, keys, keys, np.full(n_keys, 100.0), capacity=capacity)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=200), st.lists(st.integers(0, 30), min_size=3, max_size=3))
def test_each_key_is_first_in_first_out_and_nothing_is_lost(keys: list[int], takes: list[int]) -> None:
    q = _queue(3)
    k = np.array(keys, dtype=np.int64)
    rid = np.arange(len(k), dtype=np.int64)
    q.push(k, rid.astype(np.float64), rid * 2.0, rid * 3.0, rid)  # tiny rings: grows several times
    assert len(q) == len(k)
    taken = q.take(np.array(takes))
    for key in range(3):
        mine = rid[k == key]
        got = taken.rid[taken.key == key]
        np.testing.assert_array_equal(got, mine[:takes[key]])  # the oldest first, in arrival order
    np.testing.assert_array_equal(taken.inp, taken.rid * 2.0)
    np.testing.assert_array_equal(taken.out, taken.rid * 3.0)
    rest = q.take(q.size.copy())
    assert sorted([*taken.rid.tolist(), *rest.rid.tolist()]) == rid.tolist() and len(q) == 0


def test_overdue_counts_the_heads_past_their_deadline() -> None:
    q = _queue(2, capacity=4)
    q.push(np.array([0, 0, 1, 0]), np.array([0.0, 50.0, 10.0, 200.0]), np.ones(4), np.ones(4), np.arange(4))
    np.testing.assert_array_equal(q.overdue(120.0), [1, 1])  # t + 100 < 120: key 0's first, key 1's only
    np.testing.assert_array_equal(q.overdue(400.0), [3, 1])


# ------------------------------------------------------------------------ whole simulations


def _run(plan_dir: Path, **kw: object) -> SimRun:
    base: dict[str, object] = {"hours": 2.0, "sample": 0.05, "seed": 3}
    base.update(kw)
    return simulate(plan_dir, SimConfig(**base))  # type: ignore[arg-type]


def test_the_plan_survives_its_own_simulator(served_plan_dir: Path) -> None:
    """plan -> simulate on a small scenario: every workload meets its SLO (batch: its deadline) for >= 95 % of
    its requests, < 0.5 % are rejected as saturated, and the simulator serves what the plan says it serves."""
    run = _run(served_plan_dir, hours=24.0, sample=0.02)
    conserved(run)
    s = build_outputs(run).summary
    plan = json.loads((served_plan_dir / "plan.json").read_text())
    period = str(run.backends.period)
    for w, att in s["slo_attainment"].items():
        assert att >= 0.95, (w, att)
    wl = list(run.world.ds.workload.values)
    e = run.engine
    for i, w in enumerate(wl):
        arrivals = int(e.cz[CZ_ARRIVALS, :, i].sum())
        if arrivals == 0:
            continue
        assert e.rej[:, i, SATURATED].sum() < 0.005 * arrivals, w
        served = (e.cz[CZ_SERVED, :, i].sum() + e.cz[CZ_INFLIGHT, :, i].sum()) / arrivals
        planned = plan["served_share"]["by_workload"][w][plan["served_share"]["periods"].index(int(period))] \
            if isinstance(plan["served_share"]["by_workload"][w], list) else plan["served_share"]["by_workload"][w]
        assert served >= float(planned) - 0.02, (w, served, planned)


def test_interactive_work_goes_first_when_the_fleet_is_short(served_plan_dir: Path) -> None:
    """With every site at 45 % of its power the fleet cannot carry all work: chat keeps its targets (strict
    priority), batch waits in its queue (never refused for load), and every request is accounted for."""
    sites = [s["site"] for s in json.loads((served_plan_dir / "plan.json").read_text())["sites"]]
    shocks = tuple(f"power-cut:{s}:0.45" for s in sites)
    run = _run(served_plan_dir, hours=3.0, shocks=shocks)
    conserved(run)
    s = build_outputs(run).summary
    att = s["slo_attainment"]
    assert att["chat"] >= 0.9, att
    lat = s["latency_s"]
    assert lat["batch"]["ttft"]["p50"] > 20 * lat["chat"]["ttft"]["p50"], lat  # batch waited for spare slots
    wl = list(run.world.ds.workload.values)
    e = run.engine
    chat, batch = wl.index("chat"), wl.index("batch")
    assert e.rej[:, chat, SATURATED].sum() <= 0.01 * e.cz[CZ_ARRIVALS, :, chat].sum()
    assert e.rej[:, batch, SATURATED].sum() == 0  # batch is never refused for load: it waits
    assert e.cz[CZ_INFLIGHT, :, batch].sum() > 0  # ... and is still queued at the end


def test_batch_past_its_deadline_expires(tmp_path: Path) -> None:
    """With a 15-minute deadline and the fleet down to a sliver, batch work expires in its queue."""
    src = (Path(__file__).parents[1] / "data" / "tiny_a.yaml").read_text(encoding="utf-8")
    path = tmp_path / "short.yaml"
    path.write_text(src.replace("deadline_h: 24", "deadline_h: 0.25"), encoding="utf-8")  # tiny_a, short deadline
    write_plan(make_plan(load_scenario(str(path))), tmp_path / "plan", source=str(path))
    sites = [s["site"] for s in json.loads((tmp_path / "plan" / "plan.json").read_text())["sites"]]
    run = _run(tmp_path / "plan", hours=1.0, shocks=tuple(f"power-cut:{s}:0.05" for s in sites))
    conserved(run)
    batch = list(run.world.ds.workload.values).index("batch")
    expired = int(run.engine.rej[:, batch, EXPIRED].sum())
    assert expired > 0
    assert build_outputs(run).summary["rejections"]["expired"] == expired
