"""End-to-end simulation of a small plan: conservation, determinism, shocks, residency, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovcloud.routing.router import OK, SATURATED, UNHEALTHY, LoadState, RouteTable
from sovcloud.sim.kernels import CZ_ARRIVALS
from sovcloud.sim.output import build_outputs, write_outputs
from sovcloud.sim.route import decide_tick
from sovcloud.sim.run import SimConfig, SimRun, simulate
from tests.support.sim import conserved

DATA = Path(__file__).parents[1] / "data"


def _run(plan_dir: Path, **kw: object) -> SimRun:
    base: dict[str, object] = {"hours": 0.25, "sample": 0.01, "seed": 1}
    base.update(kw)
    return simulate(plan_dir, SimConfig(**base))  # type: ignore[arg-type]


def test_conservation_per_zone_and_overall(plan_dir: Path) -> None:
    run = _run(plan_dir)
    conserved(run)
    s = build_outputs(run).summary
    r = s["requests"]
    assert r["arrivals"] == r["served"] + r["rejected"] + r["lost"] + r["in_flight"]
    assert sum(s["rejections"].values()) == r["rejected"]
    zone = build_outputs(run).tables["by_zone"]
    per_zone = zone[zone.workload == "all"]
    assert (per_zone.arrivals == per_zone.served + per_zone.rejected + per_zone.lost + per_zone.in_flight).all()
    assert s["residency_violations"] == 0


def test_same_seed_same_bytes_other_seed_differs(plan_dir: Path, tmp_path: Path) -> None:
    texts = []
    for i, seed in enumerate((5, 5, 6)):
        out = build_outputs(_run(plan_dir, seed=seed))
        write_outputs(out, tmp_path / str(i))
        texts.append((tmp_path / str(i) / "summary.json").read_bytes())
    assert texts[0] == texts[1] and texts[0] != texts[2]
    a, b = (pd.read_parquet(tmp_path / str(i) / "timeline.parquet") for i in (0, 1))
    pd.testing.assert_frame_equal(a, b)


def test_outputs_follow_the_contract(plan_dir: Path, tmp_path: Path) -> None:
    out = build_outputs(_run(plan_dir, hours=1.5))
    write_outputs(out, tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    for key in ("schema", "plan", "period", "hours", "seed", "traffic", "shocks", "requests", "rejections",
                "slo_attainment", "latency_s", "residency_violations", "utilization", "energy_mwh", "water_m3",
                "carbon_t", "cost_usd", "sample"):
        assert key in s, key
    assert s["schema"] == "sovcloud.sim/1" and s["hours"] == 1.5 and s["traffic"] == "poisson"
    assert set(s["plan"]) == {"path", "scenario_sha256"}
    assert 0.0 <= s["slo_attainment"]["all"] <= 1.0 and "chat" in s["latency_s"]
    lat = s["latency_s"]["chat"]
    assert 0 < lat["ttft"]["p50"] <= lat["ttft"]["p95"] <= lat["ttft"]["p99"]
    assert lat["e2e"]["p50"] > lat["ttft"]["p50"] and s["energy_mwh"] > 0 and s["cost_usd"] > 0
    assert all(0.0 <= u <= 1.0 for u in s["utilization"].values())
    timeline = pd.read_parquet(tmp_path / "timeline.parquet")
    assert {"hour", "site", "served", "rejected", "utilization"} <= set(timeline.columns)
    assert sorted(timeline.hour.unique()) == [0, 1]
    for name in ("by_zone", "by_site", "by_workload"):
        frame = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert {"ttft_p50", "tpot_p95", "e2e_p99", "slo_attainment"} <= set(frame.columns)
    by_w = pd.read_parquet(tmp_path / "by_workload.parquet").set_index("workload")
    assert by_w.loc["all", "served"] == s["requests"]["served"]


def test_outage_of_every_compliant_site_rejects_with_reason_and_never_crosses_residency(plan_dir: Path) -> None:
    # EU zones may only be served in the EU (de-fra, fr-par); both go down 6 minutes in
    run = _run(plan_dir, hours=0.3, shocks=("outage:de-fra@0.1h", "outage:fr-par@0.1h"))
    s = build_outputs(run).summary
    conserved(run)
    assert s["residency_violations"] == 0
    assert s["rejections"]["unhealthy"] > 0 and s["requests"]["lost"] > 0
    zones, sites = run.world.zones, run.world.sites
    routed = pd.DataFrame(run.engine.routed, index=zones, columns=sites)
    assert routed.loc[["z-de", "z-fr"], "us-ash"].sum() == 0  # failover never leaves the EU
    rej = pd.DataFrame(run.engine.rej.sum(axis=1), index=zones)
    assert rej.loc[["z-de", "z-fr"], UNHEALTHY].sum() > 0 and rej.loc["z-us", UNHEALTHY] == 0


def test_power_cut_surge_and_embargo(plan_dir: Path) -> None:
    calm = _run(plan_dir, hours=0.2)
    surge = _run(plan_dir, hours=0.2, shocks=("surge:DE:2",))
    de = calm.world.zones.index("z-de")
    assert surge.engine.cz[CZ_ARRIVALS, de].sum() > 1.7 * calm.engine.cz[CZ_ARRIVALS, de].sum()
    cut = _run(plan_dir, hours=0.2, shocks=("power-cut:de-fra:0.25",))
    fra = [i for i, b in enumerate(cut.backends.ids) if b.startswith("de-fra/")]
    assert (cut.engine.cap[fra] < calm.engine.cap[fra]).all()
    embargo = _run(plan_dir, hours=0.2, shocks=("embargo:*@0.05h",))
    s = build_outputs(embargo).summary
    assert s["rejections"]["unhealthy"] > 0 and s["requests"]["lost"] > 0 and s["residency_violations"] == 0
    conserved(embargo)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), tick=st.sampled_from([0.25, 1.0, 5.0]),
       shocks=st.lists(st.sampled_from(["outage:de-fra@0.05h", "outage:fr-par@0.02h-0.1h", "power-cut:fr-par:0.3",
                                        "surge:FR:3@0.05h", "outage:us-ash@0.03h"]), max_size=3, unique=True))
def test_property_no_served_request_crosses_residency(plan_dir: Path, seed: int, tick: float,
                                                      shocks: list[str]) -> None:
    run = _run(plan_dir, hours=0.15, seed=seed, tick_s=tick, shocks=tuple(shocks))
    conserved(run)
    allowed = run.world.ds.residency.transpose("zone", "site").values
    assert run.engine.routed[~allowed].sum() == 0
    assert build_outputs(run).summary["residency_violations"] == 0


def test_tick_rounds_spread_a_key_over_backends_up_to_their_limits() -> None:
    table = RouteTable(zones=("z",), models=("m",), backend_ids=("a", "b"), backend_site=("s1", "s2"),
                       model=np.array([0, 0]), allowed=np.array([[True, True]]), rtt_ms=np.array([[10.0, 12.0]]))
    state = LoadState(healthy=np.ones(2, dtype=bool), inflight=np.zeros(2), slots=np.array([4.0, 4.0]),
                      service_s=np.array([10.0, 10.0]), ttft_s=np.array([0.1, 0.1]), limit=np.array([8.0, 8.0]))
    zero = np.zeros(20, dtype=np.int64)
    backend, reason, cut = decide_tick(table, state, zero, zero)
    # free slots first (a, then b), then queue steps alternating by expected TTFT, then the limit
    assert backend.tolist() == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4 + [-1] * 4
    assert reason.tolist() == [OK] * 16 + [SATURATED] * 4 and cut == 0
    assert state.inflight.tolist() == [0.0, 0.0]  # the caller's state is not touched
