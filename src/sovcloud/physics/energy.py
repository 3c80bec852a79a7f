"""Power, energy, water and carbon of installed accelerators, vectorised over sites, chips and hours.

Math first. For ``n`` chips of one type at utilisation ``u`` in [0, 1]::

    load(u)      = idle_fraction + (1 - idle_fraction) * u                  (share of full power)
    chip_w       = tdp_w * load(u)                                          (per chip)
    server_w     = server_overhead_w / server_chips * load(u)               (host CPU/NIC/fans, per chip)
    IT_MW        = n * (chip_w + server_w) * (1 + network_share) / 1e6
    facility_MW  = IT_MW * PUE
    E_MWh        = P_MW * dt_h                                              (per time step)
    water_m3     = WUE[L/kWh] * E_IT[MWh]          (L/kWh * 1000 kWh/MWh / 1000 L/m3 = m3/MWh)
    carbon_t     = CI[g/kWh] * max(E_facility - E_renewable, 0)[MWh] / 1000   (g/kWh * MWh = kg)

Conventions and assumptions:

* Server overhead (``server_overhead_w`` per server of ``server_chips`` chips, at full load) follows
  the same idle + dynamic law as the chip, charged per chip (exact when chips fill whole servers).
* ``network_share`` (:data:`NETWORK_OVERHEAD_SHARE`, 8 %) adds switches and optics of the cluster
  fabric as a share of chip + server power; NICs are already in the server overhead.
* WUE is per **IT** energy, as The Green Grid defines it (site water / IT kWh); carbon is charged on
  **facility** energy (IT x PUE), location-based intensity, less renewable contracts (market-based),
  never below zero. Renewable MWh given per site for the whole period are netted against the
  site's period energy and the uncovered share is spread over hours in proportion to energy
  ("annual matching"); renewable MWh given per site and hour are netted hour by hour ("hourly
  matching").

Every function broadcasts numpy arrays, and xarray DataArrays by dimension name, e.g. chips
``[site, chip]`` with utilisation ``[site, chip, hour]``. :func:`footprint` adds up a whole fleet.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast, overload

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from sovcloud.errors import PhysicsError
from sovcloud.scenario.catalog import Accelerator

__all__ = [
    "NETWORK_OVERHEAD_SHARE",
    "UTILIZATION_TOLERANCE",
    "ChipPowerSpec",
    "Footprint",
    "SiteParams",
    "carbon_t",
    "chip_power_w",
    "energy_mwh",
    "facility_power_mw",
    "footprint",
    "it_power_mw",
    "load_fraction",
    "water_m3",
]

NETWORK_OVERHEAD_SHARE = 0.08  # fabric switches + optics, share of chip + server power (docs/physics.md)
UTILIZATION_TOLERANCE = 1e-9  # utilisation may exceed 1 by this much (solver round-off)

Num = float | NDArray[Any]  # numpy-side inputs: Python numbers and arrays
Field = NDArray[np.float64] | xr.DataArray


# ---------------------------------------------------------------------------------------------- helpers


def _values(x: Any) -> NDArray[Any]:
    return np.asarray(x.values if isinstance(x, xr.DataArray) else x)


def _arr(name: str, x: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """``x`` as float64 (ndarray, or DataArray kept as such) after checking it is finite and in range."""
    out: Any = x.astype(np.float64) if isinstance(x, xr.DataArray) else np.asarray(x, dtype=np.float64)
    v = _values(out)
    if not np.all(np.isfinite(v)):
        raise PhysicsError(f"{name} must be finite numbers; got NaN or infinity")
    if lo is not None and np.any(v < lo):
        raise PhysicsError(f"{name} must be >= {lo:g}; got {float(v.min()):g}")
    if hi is not None and np.any(v > hi):
        raise PhysicsError(f"{name} must be <= {hi:g}; got {float(v.max()):g}")
    return out


def _broadcast(fn: str, op: Any) -> Any:
    try:
        return op()
    except ValueError as exc:  # numpy shape mismatch
        raise PhysicsError(f"{fn}: array shapes do not broadcast ({exc})") from exc


# ---------------------------------------------------------------------------------------------- power


@overload
def load_fraction(utilization: xr.DataArray, idle_fraction: Num | xr.DataArray) -> xr.DataArray: ...
@overload
def load_fraction(utilization: Num, idle_fraction: xr.DataArray) -> xr.DataArray: ...
@overload
def load_fraction(utilization: Num, idle_fraction: Num) -> NDArray[np.float64]: ...
def load_fraction(utilization: Num | xr.DataArray, idle_fraction: Num | xr.DataArray) -> Field:
    """Share of full power drawn at ``utilization``: ``idle + (1 - idle) * u`` (1 at u = 1)."""
    u = _arr("utilization", utilization, 0.0, 1.0 + UTILIZATION_TOLERANCE)
    f = _arr("idle_fraction", idle_fraction, 0.0, 1.0)
    return cast(Field, _broadcast("load_fraction", lambda: f + (1.0 - f) * u))


@overload
def chip_power_w(utilization: xr.DataArray, tdp_w: Num | xr.DataArray,
                 idle_fraction: Num | xr.DataArray) -> xr.DataArray: ...
@overload
def chip_power_w(utilization: Num, tdp_w: xr.DataArray, idle_fraction: Num | xr.DataArray) -> xr.DataArray: ...
@overload
def chip_power_w(utilization: Num, tdp_w: Num, idle_fraction: Num) -> NDArray[np.float64]: ...
def chip_power_w(utilization: Num | xr.DataArray, tdp_w: Num | xr.DataArray,
                 idle_fraction: Num | xr.DataArray) -> Field:
    """Power of one chip (W): ``tdp_w * (idle + (1 - idle) * u)``."""
    tdp = _arr("tdp_w", tdp_w, 0.0)
    load = load_fraction(utilization, idle_fraction)
    return cast(Field, _broadcast("chip_power_w", lambda: tdp * load))


@overload
def it_power_mw(chips: xr.DataArray, utilization: Num | xr.DataArray, tdp_w: Num | xr.DataArray,
                idle_fraction: Num | xr.DataArray, server_chips: Num | xr.DataArray = ...,
                server_overhead_w: Num | xr.DataArray = ...,
                network_share: Num | xr.DataArray = ...) -> xr.DataArray: ...
@overload
def it_power_mw(chips: Num, utilization: xr.DataArray, tdp_w: Num | xr.DataArray,
                idle_fraction: Num | xr.DataArray, server_chips: Num | xr.DataArray = ...,
                server_overhead_w: Num | xr.DataArray = ...,
                network_share: Num | xr.DataArray = ...) -> xr.DataArray: ...
@overload
def it_power_mw(chips: Num, utilization: Num, tdp_w: Num, idle_fraction: Num, server_chips: Num = ...,
                server_overhead_w: Num = ..., network_share: Num = ...) -> NDArray[np.float64]: ...
def it_power_mw(chips: Num | xr.DataArray, utilization: Num | xr.DataArray, tdp_w: Num | xr.DataArray,
                idle_fraction: Num | xr.DataArray, server_chips: Num | xr.DataArray = 8.0,
                server_overhead_w: Num | xr.DataArray = 0.0,
                network_share: Num | xr.DataArray = NETWORK_OVERHEAD_SHARE) -> Field:
    """IT power (MW) of ``chips`` chips at ``utilization``, element by element (sum axes yourself).

    ``chips * (tdp_w + server_overhead_w / server_chips) * load(u) * (1 + network_share) / 1e6``.
    """
    n = _arr("chips", chips, 0.0)
    tdp = _arr("tdp_w", tdp_w, 0.0)
    per_server = _arr("server_chips", server_chips, 1.0)
    overhead = _arr("server_overhead_w", server_overhead_w, 0.0)
    share = _arr("network_share", network_share, 0.0, 1.0)
    load = load_fraction(utilization, idle_fraction)
    scale = (1.0 + share) / 1e6  # may be an array: the share can differ by site
    return cast(Field, _broadcast("it_power_mw", lambda: n * (tdp + overhead / per_server) * load * scale))


@overload
def facility_power_mw(it_mw: xr.DataArray, pue: Num | xr.DataArray) -> xr.DataArray: ...
@overload
def facility_power_mw(it_mw: Num, pue: xr.DataArray) -> xr.DataArray: ...
@overload
def facility_power_mw(it_mw: Num, pue: Num) -> NDArray[np.float64]: ...
def facility_power_mw(it_mw: Num | xr.DataArray, pue: Num | xr.DataArray) -> Field:
    """Facility power (MW) = IT power x PUE (PUE >= 1)."""
    it = _arr("it_mw", it_mw, 0.0)
    p = _arr("pue", pue, 1.0)
    return cast(Field, _broadcast("facility_power_mw", lambda: it * p))


@overload
def energy_mwh(power_mw: xr.DataArray, dt_h: float | xr.DataArray = ...) -> xr.DataArray: ...
@overload
def energy_mwh(power_mw: Num, dt_h: xr.DataArray) -> xr.DataArray: ...
@overload
def energy_mwh(power_mw: Num, dt_h: Num = ...) -> NDArray[np.float64]: ...
def energy_mwh(power_mw: Num | xr.DataArray, dt_h: Num | xr.DataArray = 1.0) -> Field:
    """Energy (MWh) of each time step: power (MW) x step length ``dt_h`` (hours, > 0)."""
    p = _arr("power_mw", power_mw, 0.0)
    dt = _arr("dt_h", dt_h, 0.0)
    if np.any(_values(dt) == 0.0):
        raise PhysicsError("dt_h must be > 0 hours")
    return cast(Field, _broadcast("energy_mwh", lambda: p * dt))


@overload
def water_m3(it_energy_mwh: xr.DataArray, wue_l_per_kwh: Num | xr.DataArray) -> xr.DataArray: ...
@overload
def water_m3(it_energy_mwh: Num, wue_l_per_kwh: xr.DataArray) -> xr.DataArray: ...
@overload
def water_m3(it_energy_mwh: Num, wue_l_per_kwh: Num) -> NDArray[np.float64]: ...
def water_m3(it_energy_mwh: Num | xr.DataArray, wue_l_per_kwh: Num | xr.DataArray) -> Field:
    """Site water use (m3) = WUE (L per IT kWh, The Green Grid) x IT energy (MWh); 1 L/kWh = 1 m3/MWh."""
    e = _arr("it_energy_mwh", it_energy_mwh, 0.0)
    wue = _arr("wue_l_per_kwh", wue_l_per_kwh, 0.0)
    return cast(Field, _broadcast("water_m3", lambda: e * wue))


@overload
def carbon_t(energy_mwh: xr.DataArray, carbon_g_per_kwh: Num | xr.DataArray,
             renewable_mwh: Num | xr.DataArray = ...) -> xr.DataArray: ...
@overload
def carbon_t(energy_mwh: Num, carbon_g_per_kwh: xr.DataArray,
             renewable_mwh: Num | xr.DataArray = ...) -> xr.DataArray: ...
@overload
def carbon_t(energy_mwh: Num, carbon_g_per_kwh: Num, renewable_mwh: Num = ...) -> NDArray[np.float64]: ...
def carbon_t(energy_mwh: Num | xr.DataArray, carbon_g_per_kwh: Num | xr.DataArray,
             renewable_mwh: Num | xr.DataArray = 0.0) -> Field:
    """Emissions (tonnes CO2e) = intensity (g/kWh) x max(facility MWh - renewable MWh, 0) / 1000.

    Netting is element by element: pass period totals per site for annual matching, or per
    site and hour for hourly matching (:func:`footprint` does both).
    """
    e = _arr("energy_mwh", energy_mwh, 0.0)
    ci = _arr("carbon_g_per_kwh", carbon_g_per_kwh, 0.0)
    r = _arr("renewable_mwh", renewable_mwh, 0.0)
    return cast(Field, _broadcast("carbon_t", lambda: np.maximum(e - r, 0.0) * ci / 1000.0))


# ---------------------------------------------------------------------------------------------- fleet


@dataclass(frozen=True)
class ChipPowerSpec:
    """Power figures of the chip types along the ``chip`` axis (each array has one entry per id)."""

    ids: tuple[str, ...]
    tdp_w: NDArray[np.float64]
    idle_fraction: NDArray[np.float64]
    server_chips: NDArray[np.float64]
    server_overhead_w: NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, lo, hi in (("tdp_w", 0.0, None), ("idle_fraction", 0.0, 1.0), ("server_chips", 1.0, None),
                             ("server_overhead_w", 0.0, None)):
            arr = np.atleast_1d(_arr(f"ChipPowerSpec.{name}", getattr(self, name), lo, hi))
            if arr.shape != (n,):
                raise PhysicsError(f"ChipPowerSpec.{name} has shape {arr.shape}; expected ({n},), one per chip id")
            object.__setattr__(self, name, arr)

    @classmethod
    def from_accelerators(cls, accelerators: Sequence[Accelerator]) -> ChipPowerSpec:
        """Spec of catalog accelerators, in the given order."""
        return cls(
            ids=tuple(a.id for a in accelerators),
            tdp_w=np.array([a.tdp_w for a in accelerators], dtype=np.float64),
            idle_fraction=np.array([a.idle_power_fraction for a in accelerators], dtype=np.float64),
            server_chips=np.array([a.server_chips for a in accelerators], dtype=np.float64),
            server_overhead_w=np.array([a.server_overhead_w for a in accelerators], dtype=np.float64),
        )


@dataclass(frozen=True)
class SiteParams:
    """Per-site efficiency and grid figures: scalars, ``[site]`` or ``[site, hour]`` arrays (or DataArrays)."""

    pue: Num | xr.DataArray
    wue_l_per_kwh: Num | xr.DataArray
    carbon_g_per_kwh: Num | xr.DataArray

    @classmethod
    def from_sites(cls, sites: Sequence[Any]) -> SiteParams:
        """From scenario site records (``.pue``, ``.wue_l_per_kwh``, ``.carbon_g_per_kwh``), in order."""
        return cls(
            pue=np.array([float(s.pue) for s in sites], dtype=np.float64),
            wue_l_per_kwh=np.array([float(s.wue_l_per_kwh) for s in sites], dtype=np.float64),
            carbon_g_per_kwh=np.array([float(s.carbon_g_per_kwh) for s in sites], dtype=np.float64),
        )


@dataclass(frozen=True)
class Footprint:
    """A fleet's power and resource use. Axes: ``[site, hour]`` (power, hourly carbon) or ``[site]``.

    Without an hour axis in the utilisation, ``hour`` has length 1 and ``dt_h`` is the period.
    """

    it_mw: NDArray[np.float64]
    facility_mw: NDArray[np.float64]
    it_mwh: NDArray[np.float64]
    facility_mwh: NDArray[np.float64]
    water_m3: NDArray[np.float64]
    carbon_gross_t: NDArray[np.float64]
    carbon_t: NDArray[np.float64]
    carbon_t_hourly: NDArray[np.float64]
    renewable_used_mwh: NDArray[np.float64]
    dt_h: float
    site: tuple[Hashable, ...] | None = None
    hour: tuple[Hashable, ...] | None = None

    def totals(self) -> dict[str, float]:
        """Fleet totals: peak facility MW, MWh, m3 and tonnes over all sites and hours."""
        return {
            "peak_facility_mw": float(self.facility_mw.sum(axis=0).max()) if self.facility_mw.size else 0.0,
            "it_mwh": float(self.it_mwh.sum()),
            "facility_mwh": float(self.facility_mwh.sum()),
            "water_m3": float(self.water_m3.sum()),
            "carbon_gross_t": float(self.carbon_gross_t.sum()),
            "carbon_t": float(self.carbon_t.sum()),
            "renewable_used_mwh": float(self.renewable_used_mwh.sum()),
        }

    def to_xarray(self) -> xr.Dataset:
        """The footprint as an xarray Dataset on dims ``site`` and ``hour`` (coords when known)."""
        coords: dict[str, Any] = {}
        if self.site is not None:
            coords["site"] = list(self.site)
        if self.hour is not None:
            coords["hour"] = list(self.hour)
        sh, s = ("site", "hour"), ("site",)
        return xr.Dataset(
            {
                "it_mw": (sh, self.it_mw, {"units": "MW"}),
                "facility_mw": (sh, self.facility_mw, {"units": "MW"}),
                "carbon_t_hourly": (sh, self.carbon_t_hourly, {"units": "t"}),
                "it_mwh": (s, self.it_mwh, {"units": "MWh"}),
                "facility_mwh": (s, self.facility_mwh, {"units": "MWh"}),
                "water_m3": (s, self.water_m3, {"units": "m3"}),
                "carbon_gross_t": (s, self.carbon_gross_t, {"units": "t"}),
                "carbon_t": (s, self.carbon_t, {"units": "t"}),
                "renewable_used_mwh": (s, self.renewable_used_mwh, {"units": "MWh"}),
            },
            coords=coords,
            attrs={"dt_h": self.dt_h},
        )


_DIMS = ("site", "chip", "hour")


class _Layout:
    """Brings numpy arrays (by documented ndim layout) and DataArrays (by dim name) onto [site, chip, hour]."""

    def __init__(self) -> None:
        self.coords: dict[str, NDArray[Any]] = {}

    def __call__(self, name: str, x: Any, layouts: Mapping[int, tuple[str, ...]]) -> NDArray[np.float64]:
        if isinstance(x, xr.DataArray):
            extra = [d for d in x.dims if d not in _DIMS]
            if extra:
                raise PhysicsError(f"{name}: unknown dimensions {extra}; use site, chip, hour")
            dims: tuple[str, ...] = tuple(d for d in _DIMS if d in x.dims)
            for d in dims:
                if d in x.coords:
                    self._coord(name, d, np.asarray(x.coords[d].values))
            data = np.asarray(x.transpose(*dims).values, dtype=np.float64)
        else:
            data = np.asarray(x, dtype=np.float64)
            if data.ndim not in layouts:
                want = " or ".join(str(list(v)) for v in layouts.values())
                raise PhysicsError(f"{name}: a {data.ndim}-d array has no defined layout; give {want}")
            dims = layouts[data.ndim]
        shape = [data.shape[dims.index(d)] if d in dims else 1 for d in _DIMS]
        return data.reshape(shape)

    def coord(self, dim: str, size: int) -> tuple[Hashable, ...] | None:
        """The coordinates seen for ``dim``, if they match ``size`` entries."""
        v = self.coords.get(dim)
        return tuple(v.tolist()) if v is not None and v.size == size else None

    def _coord(self, name: str, dim: str, values: NDArray[Any]) -> None:
        seen = self.coords.get(dim)
        if seen is None:
            self.coords[dim] = values
        elif seen.shape != values.shape or not np.array_equal(seen, values):
            raise PhysicsError(f"{name}: '{dim}' coordinates differ from another input; align them first "
                               "(xarray.align)")


def _site_hour(name: str, a: NDArray[np.float64], n_site: int, n_hour: int) -> NDArray[np.float64]:
    """A per-site input on the [site, 1 or chip, hour] layout as a [site, hour] array."""
    try:
        return np.broadcast_to(a, (n_site, 1, n_hour))[:, 0, :]
    except ValueError as exc:
        raise PhysicsError(f"{name} of shape {a.shape} does not fit {n_site} sites x {n_hour} hours") from exc


def _uncovered_mwh(fac_e: NDArray[np.float64], ren: NDArray[np.float64], hourly: bool) -> NDArray[np.float64]:
    """Facility MWh [site, hour] not covered by renewables: netted hour by hour, or per site and spread."""
    n_site, n_hour = fac_e.shape
    if hourly:
        return np.maximum(fac_e - _site_hour("renewable_mwh", ren, n_site, n_hour), 0.0)
    fac_tot = fac_e.sum(axis=1)
    r_site = _site_hour("renewable_mwh", ren, n_site, n_hour)[:, 0]
    share = np.divide(np.maximum(fac_tot - r_site, 0.0), fac_tot, out=np.zeros_like(fac_tot), where=fac_tot > 0.0)
    out: NDArray[np.float64] = fac_e * share[:, None]
    return out


def _fleet_it_mw(
    n: NDArray[np.float64], u: NDArray[np.float64], spec: ChipPowerSpec, network_share: float
) -> NDArray[np.float64]:
    """IT power [site, hour] of chips ``n`` [site, chip, 1] at utilisation ``u`` (on the same layout)."""
    c = spec.tdp_w.size

    def per_chip(a: NDArray[np.float64]) -> NDArray[np.float64]:
        return a.reshape(1, c, 1)

    it3 = _broadcast("footprint", lambda: it_power_mw(n, u, per_chip(spec.tdp_w), per_chip(spec.idle_fraction),
                                                      per_chip(spec.server_chips), per_chip(spec.server_overhead_w),
                                                      network_share))
    return np.asarray(it3.sum(axis=1), dtype=np.float64)


def footprint(
    chips: Num | xr.DataArray,
    utilization: Num | xr.DataArray,
    spec: ChipPowerSpec,
    sites: SiteParams,
    *,
    renewable_mwh: Num | xr.DataArray = 0.0,
    dt_h: float = 1.0,
    network_share: float = NETWORK_OVERHEAD_SHARE,
) -> Footprint:
    """Power, energy, water and carbon of a fleet.

    numpy layouts: ``chips`` ``[site, chip]``; ``utilization`` a scalar, ``[site, hour]`` (all chips of a
    site alike) or ``[site, chip, hour]``; ``sites`` fields and ``renewable_mwh`` scalars, ``[site]`` or
    ``[site, hour]``. DataArrays may use any subset of dims ``site, chip, hour`` in any order.
    ``renewable_mwh`` without an hour axis is the site's contracted MWh for the whole period (annual
    matching); with an hour axis, per step (hourly matching). ``dt_h`` is the step length in hours.
    """
    if not (np.isfinite(dt_h) and dt_h > 0.0):
        raise PhysicsError(f"dt_h must be > 0 hours; got {dt_h}")
    lay = _Layout()
    n = lay("chips", _arr("chips", chips, 0.0), {2: ("site", "chip")})
    u = lay("utilization", _arr("utilization", utilization, 0.0, 1.0 + UTILIZATION_TOLERANCE),
            {0: (), 2: ("site", "hour"), 3: _DIMS})
    site_layouts = {0: (), 1: ("site",), 2: ("site", "hour")}
    pue = lay("pue", _arr("pue", sites.pue, 1.0), site_layouts)
    wue = lay("wue_l_per_kwh", _arr("wue_l_per_kwh", sites.wue_l_per_kwh, 0.0), site_layouts)
    ci = lay("carbon_g_per_kwh", _arr("carbon_g_per_kwh", sites.carbon_g_per_kwh, 0.0), site_layouts)
    ren = lay("renewable_mwh", _arr("renewable_mwh", renewable_mwh, 0.0), site_layouts)
    ren_hourly = (isinstance(renewable_mwh, xr.DataArray) and "hour" in renewable_mwh.dims) or (
        not isinstance(renewable_mwh, xr.DataArray) and np.ndim(renewable_mwh) == 2)
    c = spec.tdp_w.size
    if n.shape[1] != c:
        raise PhysicsError(f"chips has {n.shape[1]} chip columns but the spec has {c} chip types")
    if "chip" in lay.coords and tuple(str(v) for v in lay.coords["chip"]) != spec.ids:
        raise PhysicsError(f"chip coordinates {list(lay.coords['chip'])} differ from the spec ids {list(spec.ids)}")

    it_sh = _fleet_it_mw(n, u, spec, network_share)  # [site, hour]
    n_site, n_hour = it_sh.shape[0], it_sh.shape[1]
    fac_sh = it_sh * _site_hour("pue", pue, n_site, n_hour)
    it_e = it_sh * dt_h
    fac_e = fac_sh * dt_h
    fac_tot = fac_e.sum(axis=1)
    uncovered = _uncovered_mwh(fac_e, ren, ren_hourly)
    ci_sh = _site_hour("carbon_g_per_kwh", ci, n_site, n_hour)
    carbon_hourly = uncovered * ci_sh / 1000.0
    return Footprint(
        it_mw=it_sh,
        facility_mw=fac_sh,
        it_mwh=it_e.sum(axis=1),
        facility_mwh=fac_tot,
        water_m3=(it_e * _site_hour("wue_l_per_kwh", wue, n_site, n_hour)).sum(axis=1),
        carbon_gross_t=(fac_e * ci_sh / 1000.0).sum(axis=1),
        carbon_t=carbon_hourly.sum(axis=1),
        carbon_t_hourly=carbon_hourly,
        renewable_used_mwh=fac_tot - uncovered.sum(axis=1),
        dt_h=float(dt_h),
        site=lay.coord("site", n_site),
        hour=lay.coord("hour", n_hour),
    )
