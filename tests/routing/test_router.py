"""The routing decision core: residency is a filter, never a score; reasons; one code path for one and many."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sovcloud.errors import UnknownEntity
from sovcloud.routing.router import (
    NO_BACKEND,
    OK,
    REASONS,
    RESIDENCY,
    SATURATED,
    UNHEALTHY,
    LoadState,
    RouteTable,
    route,
    route_many,
)


def _table(allowed: np.ndarray, rtt: np.ndarray, model: np.ndarray, n_models: int = 2) -> RouteTable:
    B = allowed.shape[1]
    return RouteTable(zones=tuple(f"z{i}" for i in range(allowed.shape[0])),
                      models=tuple(f"m{i}" for i in range(n_models)),
                      backend_ids=tuple(f"b{i}" for i in range(B)), backend_site=tuple(f"s{i}" for i in range(B)),
                      model=model.astype(np.int64), allowed=allowed.astype(bool), rtt_ms=rtt.astype(float))


def _state(B: int, healthy: np.ndarray | None = None, inflight: np.ndarray | None = None) -> LoadState:
    return LoadState(healthy=np.ones(B, bool) if healthy is None else healthy.astype(bool),
                     inflight=np.zeros(B) if inflight is None else inflight.astype(float),
                     slots=np.full(B, 4.0), service_s=np.full(B, 2.0), ttft_s=np.full(B, 0.1),
                     limit=np.full(B, 8.0))


def test_nearest_compliant_backend_wins_even_when_a_forbidden_one_is_closer() -> None:
    # zone 0 may use backends 1, 2 only; backend 0 is nearest but forbidden
    t = _table(np.array([[0, 1, 1]]), np.array([[1.0, 50.0, 20.0]]), np.array([0, 0, 0]), 1)
    d = route(t, _state(3), 0, 0, 0)
    assert (d.backend, d.reason, d.backend_id) == (2, "ok", "b2")
    assert d.expected_ms == pytest.approx(20.0 + 100.0)


def test_load_moves_traffic_to_the_next_compliant_backend() -> None:
    t = _table(np.array([[1, 1]]), np.array([[10.0, 60.0]]), np.array([0, 0]), 1)
    # backend 0 with 6 in flight on 4 slots: wait = 3/4 * 2 s = 1.5 s > 50 ms of extra RTT
    d = route(t, _state(2, inflight=np.array([6.0, 0.0])), 0, 0, 0)
    assert d.backend == 1


def test_reasons_in_order_of_what_is_missing() -> None:
    t = _table(np.array([[1, 0], [0, 0]]), np.zeros((2, 2)), np.array([0, 0]), 2)
    assert route(t, _state(2), 0, 0, 1).reason == "no_backend"  # model 1 served nowhere
    assert route(t, _state(2), 1, 1, 0).reason == "residency"  # served, but not where zone 1 may go
    assert route(t, _state(2, healthy=np.array([0, 1])), 0, 0, 0).reason == "unhealthy"
    assert route(t, _state(2, inflight=np.array([8.0, 0.0])), 0, 0, 0).reason == "saturated"
    d = route(t, _state(2), 0, 0, 0, exclude=np.array([True, False]))
    assert (d.backend, d.reason, d.site) == (-1, "unhealthy", None)


def test_origin_governs_residency_and_client_governs_latency() -> None:
    allowed = np.array([[1, 0], [0, 1]])  # origin 0 -> backend 0 only
    rtt = np.array([[5.0, 100.0], [100.0, 5.0]])
    t = _table(allowed, rtt, np.array([0, 0]), 1)
    d = route(t, _state(2), origin=0, client=1, model=0)  # a client travelling far from its data's origin
    assert d.backend == 0 and d.expected_ms == pytest.approx(100.0 + 100.0)


def test_unknown_names_are_clear_errors() -> None:
    t = _table(np.ones((1, 1)), np.zeros((1, 1)), np.array([0]), 1)
    with pytest.raises(UnknownEntity, match="unknown zone 'XX'"):
        t.zone_index("XX")
    with pytest.raises(UnknownEntity, match="unknown model 'gpt'"):
        t.model_index("gpt")
    empty = np.zeros(0, np.int64)
    assert route_many(t, _state(1), empty, empty, empty).backend.size == 0


@st.composite
def worlds(draw: st.DrawFn) -> tuple[RouteTable, LoadState, np.ndarray, np.ndarray, np.ndarray]:
    Z = draw(st.integers(1, 5))
    B = draw(st.integers(1, 7))
    M = draw(st.integers(1, 3))
    allowed = draw(hnp.arrays(bool, (Z, B)))
    rtt = draw(hnp.arrays(float, (Z, B), elements=st.floats(0, 400)))
    model = draw(hnp.arrays(np.int64, B, elements=st.integers(0, M - 1)))
    healthy = draw(hnp.arrays(bool, B))
    inflight = draw(hnp.arrays(float, B, elements=st.floats(0, 10)))
    n = draw(st.integers(1, 40))
    o = draw(hnp.arrays(np.int64, n, elements=st.integers(0, Z - 1)))
    z = draw(hnp.arrays(np.int64, n, elements=st.integers(0, Z - 1)))
    m = draw(hnp.arrays(np.int64, n, elements=st.integers(0, M - 1)))
    return _table(allowed, rtt, model, M), _state(B, healthy, inflight), o, z, m


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_property_no_route_crosses_residency_and_many_equals_one(
        w: tuple[RouteTable, LoadState, np.ndarray, np.ndarray, np.ndarray]) -> None:
    t, s, o, z, m = w
    d = route_many(t, s, o, z, m)
    for k in range(len(o)):
        b = int(d.backend[k])
        one = route(t, s, int(o[k]), int(z[k]), int(m[k]))
        assert (one.backend, one.reason) == (b, REASONS[int(d.reason[k])])
        compliant = t.allowed[o[k]] & (t.model == m[k])
        if b >= 0:
            # residency is a hard filter: the chosen backend is compliant, healthy, under its limit, model right
            assert t.allowed[o[k], b] and t.model[b] == m[k] and s.healthy[b] and s.inflight[b] < s.limit[b]
            assert d.reason[k] == OK
            # and it is the best-scoring one among the available compliant backends
            avail = compliant & s.healthy & (s.inflight < s.limit)
            score = t.rtt_ms[z[k]] + 1000 * (s.ttft_s + s.wait_s())
            assert score[b] == pytest.approx(score[avail].min())
        else:
            expected = (NO_BACKEND if not (t.model == m[k]).any() else RESIDENCY if not compliant.any()
                        else UNHEALTHY if not (compliant & s.healthy).any() else SATURATED)
            assert d.reason[k] == expected
