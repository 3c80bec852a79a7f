from __future__ import annotations

import numpy as np

from sovcloud.scenario.model import Scenario
from sovcloud.vocab import DIMS
from sovcloud.world.compiled import World


def test_named_dimensions(world: World) -> None:
    ds = world.ds
    for dim in DIMS:
        assert dim in ds.dims
    assert ds.residency.dims == ("zone", "site")
    assert ds.export_status.dims == ("chip", "site", "period")
    assert ds.demand_tokens_per_h.dims == ("zone", "model", "workload", "period", "hour")


def test_demand_sums_to_daily_tokens(world: World, scenario: Scenario) -> None:
    ds = world.ds
    z = scenario.zone("de")
    users = z.population * scenario.demand.adoption_by_continent["EU"]
    per_day = float(ds.demand_tokens_per_h.sel(zone="de", model="qwen3-30b-a3b", workload="chat", period=2026).sum())
    expected = users * scenario.demand.tokens_per_user_day["qwen3-30b-a3b"]["chat"] * scenario.demand.growth[2026]
    assert np.isclose(per_day, expected, rtol=1e-9)


def test_diurnal_peak_follows_local_time(world: World) -> None:
    d = world.ds.demand_tokens_per_h.sel(model="qwen3-30b-a3b", workload="chat", period=2025)
    cn_peak = int(np.argmax(d.sel(zone="cn").values))
    us_peak = int(np.argmax(d.sel(zone="us-new-york-city").values))
    # local afternoon in China (UTC+8) and New York (UTC-4 in July) are ~12 hours apart in UTC
    assert abs(((cn_peak - us_peak) % 24) - 12) <= 3
    assert float(world.ds.zone_utc_offset_h.sel(zone="in")) == 5.5


def test_candidates_wait_for_lead_time_and_screening(world: World) -> None:
    avail = world.ds.site_available
    assert not bool(avail.sel(site="eu-netherlands", period=2026))  # 18 months + NL screening
    assert bool(avail.sel(site="eu-netherlands", period=2027))
    assert not bool(avail.sel(site="cn-nanjing", period=2026))  # shutting down


def test_distances_are_great_circle(world: World) -> None:
    d = float(world.ds.distance_km.sel(zone="gb-london", site="eu-central-1"))
    assert 600 < d < 700
