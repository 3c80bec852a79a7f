"""The serving discipline in the router core: batch work only in spare slots; the RTT budget as a last resort."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sovcloud.routing.router import LoadState, RouteTable, route, route_many


def _state(slots: float, inflight: float, batch: float, headroom: float, fill: float) -> LoadState:
    one = np.ones(1)
    return LoadState(healthy=np.ones(1, bool), inflight=np.array([inflight]), slots=np.array([slots]),
                     service_s=one, ttft_s=one * 0.01, limit=np.array([2 * slots]),
                     batch_inflight=np.array([batch]), headroom=np.array([headroom]), batch_fill=fill)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(0, 600), st.floats(0, 1), st.floats(0, 3), st.floats(0.5, 1))
def test_batch_limit_leaves_interactive_its_reserve(slots: int, interactive: int, batch_share: float,
                                                    headroom: float, fill: float) -> None:
    batch = float(np.floor(batch_share * slots))
    st_ = _state(float(slots), interactive + batch, batch, headroom, fill)
    limit = float(st_.batch_limit()[0])
    assert 0.0 <= limit <= slots
    room_for_batch = limit - interactive  # batch may be in flight up to this many
    assert room_for_batch <= fill * max(0.0, slots - interactive * (1 + headroom)) + 1e-9
    if interactive == 0:
        assert limit == np.floor(fill * slots + 1e-9)


def test_for_batch_routes_only_into_spare_slots() -> None:
    t = RouteTable(zones=("z",), models=("m",), backend_ids=("a/m/c",), backend_site=("a",),
                   model=np.zeros(1, np.int64), allowed=np.ones((1, 1), bool), rtt_ms=np.zeros((1, 1)))
    busy = _state(10.0, 6.0, 0.0, 1.0, 1.0)  # 6 interactive in flight with headroom 1: they hold 12 > 10 slots
    assert route(t, busy, 0, 0, 0).reason == "ok"  # interactive: still admitted (limit 20)
    assert route(t, busy.for_batch(), 0, 0, 0).reason == "saturated"  # batch: no spare slot
    idle = _state(10.0, 2.0, 0.0, 1.0, 1.0)  # 2 interactive hold 4 slots: 6 spare
    assert route(t, idle.for_batch(), 0, 0, 0).reason == "ok"


def test_a_backend_beyond_the_workload_rtt_budget_is_never_chosen() -> None:
    # backend 0 is 120 ms away but answers 30 ms sooner; backend 1 is 90 ms away: voice (budget 100 ms) takes 1,
    # chat (no budget) takes 0; with backend 1 full voice is "saturated", never sent beyond its budget; with
    # backend 1 gone it is "rtt_budget"
    t = RouteTable(zones=("z",), models=("m",), backend_ids=("far/m/c", "near/m/c"), backend_site=("far", "near"),
                   model=np.zeros(2, np.int64), allowed=np.ones((1, 2), bool), rtt_ms=np.array([[120.0, 90.0]]),
                   budget_ms=np.array([np.inf, 100.0]))
    two = np.ones(2)
    st_ = LoadState(healthy=np.ones(2, bool), inflight=np.zeros(2), slots=two * 4, service_s=two,
                    ttft_s=np.array([0.01, 0.07]), limit=two * 8)
    assert route(t, st_, 0, 0, 0, workload=0).backend == 0
    assert route(t, st_, 0, 0, 0, workload=1).backend == 1
    d = route_many(t, st_, np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([0, 1]))
    assert d.backend.tolist() == [0, 1]
    st_.inflight[1] = 8.0
    assert route(t, st_, 0, 0, 0, workload=1).reason == "saturated"
    st_.inflight[1], st_.healthy[1] = 0.0, False
    assert route(t, st_, 0, 0, 0, workload=1).reason == "unhealthy"
    far = RouteTable(zones=t.zones, models=t.models, backend_ids=t.backend_ids, backend_site=t.backend_site,
                     model=t.model, allowed=np.array([[True, False]]), rtt_ms=t.rtt_ms, budget_ms=t.budget_ms)
    assert route(far, st_, 0, 0, 0, workload=1).reason == "rtt_budget"
    dm = route_many(far, st_, np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([1]))
    assert dm.backend.tolist() == [-1] and dm.reason.tolist() == [6]


def test_a_zone_keeps_to_the_sites_its_plan_sized_for_it_until_they_queue(world: Any) -> None:
    """With the plan's flows, a backend the plan does not send a zone's work to costs half the workload's TTFT
    target: the zone goes to its planned site even when another is nearer, and spills once its wait is that long."""
    import pandas as pd

    from sovcloud.routing.backends import Backends

    z = world.zones[0]
    sites = tuple(world.sites[:2])
    f = np.float64
    b = Backends(period=2025, ids=(f"{sites[0]}/m/c", f"{sites[1]}/m/c"), sites=tuple(world.sites),
                 models=tuple(str(m) for m in world.ds.model.values), chips=("c", "c"), site=np.array([0, 1]),
                 model=np.array([0, 0]), tp=np.ones(2, np.int64), replicas=np.ones(2, np.int64),
                 max_batch=np.full(2, 4), input_tokens=np.ones(2, f), output_tokens=np.ones(2, f),
                 prefill_s=np.full(2, 0.01), prefill_tokens_per_s=np.full(2, 100.0), tpot0_s=np.full(2, 0.01),
                 tpot1_s=np.zeros(2), headroom=np.zeros(2), batch_fill=1.0)
    w = [str(x) for x in world.ds.workload.values].index("chat")
    flows = pd.DataFrame({"zone": [z], "site": [sites[1]], "model": [b.models[0]], "workload": ["chat"],
                          "period": [2025], "served_mtok_day": [1.0]})
    t = RouteTable.build(world, b, flows)
    t = RouteTable(zones=t.zones, models=t.models, backend_ids=t.backend_ids, backend_site=t.backend_site,
                   model=t.model, allowed=np.ones_like(t.allowed), rtt_ms=np.zeros_like(t.rtt_ms),
                   budget_ms=np.full_like(t.budget_ms, np.inf), off_plan_ms=t.off_plan_ms)
    zi = world.zones.index(z)
    two = np.ones(2)
    st_ = LoadState(healthy=np.ones(2, bool), inflight=np.zeros(2), slots=two * 4, service_s=two,
                    ttft_s=np.array([0.01, 0.05]), limit=two * 100)
    assert route(t, st_, zi, zi, 0, workload=w).backend == 1  # planned, though 40 ms slower
    assert route(t, st_, zi, zi, 0).backend == 0  # no workload given: no plan preference
    st_.inflight[1] = 4.0 + 4 * 0.6  # its expected wait is now 0.6 s, over half chat's 1 s target
    assert route(t, st_, zi, zi, 0, workload=w).backend == 0
