from __future__ import annotations

from collections import Counter

from sovcloud.geo import countries
from sovcloud.scenario.demand import ZoneGeneration
from sovcloud.scenario.zones import generate_zones


def test_zones_cover_the_world_once() -> None:
    zones = generate_zones(ZoneGeneration())
    ids = [z.id for z in zones]
    assert len(ids) == len(set(ids))
    world = sum(c.population for c in countries().values())
    assert sum(z.population for z in zones) / world >= 0.95
    by_country = Counter()  # type: Counter[str]
    for z in zones:
        by_country[z.country] += z.population
    for iso, pop in by_country.items():
        assert pop == countries()[iso].population  # metros are carved out, never double counted


def test_metros_only_in_large_countries_and_merged() -> None:
    zones = generate_zones(ZoneGeneration())
    metros = [z for z in zones if z.kind == "metro"]
    assert {"cn-shanghai", "us-new-york-city", "in-mumbai", "br-sao-paulo"} <= {z.id for z in metros}
    assert "cn-pudong" not in {z.id for z in metros}  # a district of Shanghai, merged
    assert all(countries()[z.country].population >= 50_000_000 for z in metros)


def test_generation_rule_is_overridable() -> None:
    zones = generate_zones(ZoneGeneration(metro_min_population=20_000_000, exclude_countries=["AQ", "CN"]))
    assert not any(z.country == "CN" for z in zones)
    assert all(z.population >= 20_000_000 for z in zones if z.kind == "metro")
