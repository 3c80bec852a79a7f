"""Shocks on a simulated timeline: the planner's overlays with a time window in hours.

Syntax: ``kind:target[:factor][@start[-end]]`` with times from the start of the simulation in hours
(``6h``, ``6``), minutes (``90m``) or seconds (``30s``); no ``@`` means the whole run, no end means
to the end. Kind, target and factor are parsed by :func:`sovcloud.scenario.shocks.parse_shock`, so the
kinds and their targets are the planner's:

* ``outage:SITE`` (and ``deny-site:SITE``): every backend at the site is down; requests pending
  there (queued or in service) are **lost to the shock**, new requests are routed elsewhere or
  rejected ``unhealthy``; after the window the backends come back empty.
* ``embargo:CHIPS`` (chip id, ``vendor:NAME``, ``origin:CC`` or ``*``): the backends on those chips
  are removed like an outage (pending requests lost).
* ``power-cut:SITE:F``: the site's backends keep ``ceil(F x slots)`` slots and ``F x replicas``
  (F in (0, 1]); requests already admitted finish (graceful drain), see :mod:`sovcloud.sim.kernels`.
* ``surge:ZONE|CC:F``: arrivals of a zone (or of every zone of a country) are multiplied by F.

Examples: ``outage:eu-west-1@6h``, ``outage:eu-west-1@6h-12h``, ``power-cut:eu-central-1:0.5@2h``,
``surge:DE:1.5@8h-10h``, ``embargo:vendor:NVIDIA@3h``. Overlapping shocks combine: down if any
outage or embargo is active, power factors multiply, surge factors multiply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sovcloud.errors import ScenarioError, UsageError
from sovcloud.routing.backends import Backends
from sovcloud.scenario.shocks import parse_shock
from sovcloud.world.compiled import World

__all__ = ["ShockTimeline", "SimShock", "parse_sim_shock"]

_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hms]?)\s*$")
_UNIT_S = {"h": 3600.0, "": 3600.0, "m": 60.0, "s": 1.0}
_HINT = "write kind:target[:factor][@start[-end]] with hours from the start, e.g. outage:eu-west-1@6h-12h"


@dataclass(frozen=True)
class SimShock:
    """One shock with its window [start_s, end_s) in simulated seconds."""

    kind: str
    target: str
    factor: float
    start_s: float
    end_s: float
    text: str

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


def _seconds(text: str, spec: str) -> float:
    m = _TIME.match(spec)
    if m is None:
        raise UsageError(f"--shock {text}: time '{spec}' is not a number of hours (or m / s); fix: {_HINT}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_sim_shock(text: str) -> SimShock:
    """Parse a timed shock; kind, target and factor as the planner's :func:`parse_shock`."""
    body, at, when = text.partition("@")
    try:
        base = parse_shock(body)
    except ScenarioError as exc:
        raise UsageError(f"--shock {text}: {exc.problems[0].message}; fix: {_HINT}") from exc
    start, end = 0.0, math.inf
    if at:
        first, dash, last = when.partition("-")
        start = _seconds(text, first)
        if dash:
            end = _seconds(text, last)
            if end <= start:
                raise UsageError(f"--shock {text}: the window ends before it starts; fix: {_HINT}")
    if base.kind == "power-cut" and not 0.0 < base.factor <= 1.0:
        raise UsageError(f"--shock {text}: a power cut keeps a share of the power in (0, 1] (got {base.factor:g}); "
                         "fix: e.g. power-cut:eu-central-1:0.5@2h")
    return SimShock(kind=base.kind, target=base.target, factor=float(base.factor), start_s=start, end_s=end,
                    text=text)


def _chip_matches(world: World, pattern: str) -> set[str]:
    chips = world.scenario.accelerators
    if pattern == "*":
        return {c.id for c in chips}
    if pattern.startswith("vendor:"):
        return {c.id for c in chips if c.vendor.casefold() == pattern[7:].casefold()}
    if pattern.startswith("origin:"):
        return {c.id for c in chips if c.origin_country == pattern[7:]}
    return {c.id for c in chips if c.id == pattern}


@dataclass(frozen=True)
class ShockTimeline:
    """Shocks resolved against a world and its backends: which backends and zones each one hits."""

    shocks: tuple[SimShock, ...]
    backend_mask: NDArray[np.bool_]  # [shock, backend]
    zone_mask: NDArray[np.bool_]  # [shock, zone]

    @classmethod
    def build(cls, shocks: list[SimShock], world: World, backends: Backends) -> ShockTimeline:
        n_b, zones = len(backends), world.zones
        bmask = np.zeros((len(shocks), n_b), dtype=bool)
        zmask = np.zeros((len(shocks), len(zones)), dtype=bool)
        b_site = np.array([backends.sites[i] for i in backends.site], dtype=object)
        countries = world.ds.zone_country.values.astype(str)
        for i, s in enumerate(shocks):
            if s.kind == "surge":
                zmask[i] = (np.array(zones) == s.target) | (countries == s.target)
                if not zmask[i].any():
                    raise UsageError(f"--shock {s.text}: '{s.target}' matches no demand zone or country; fix: use a "
                                     f"zone id or an ISO code, e.g. {countries[0]}")
            elif s.kind == "embargo":
                chips = _chip_matches(world, s.target)
                if not chips:
                    raise UsageError(f"--shock {s.text}: '{s.target}' matches no chip; fix: use a chip id, "
                                     "vendor:NAME, origin:CC or *, e.g. vendor:NVIDIA")
                bmask[i] = np.array([c in chips for c in backends.chips], dtype=bool)
            else:
                if s.target not in world.sites:
                    raise UsageError(f"--shock {s.text}: unknown site '{s.target}'; fix: use a site id such as "
                                     f"{world.sites[0]}")
                bmask[i] = b_site == s.target if n_b else bmask[i]
        return cls(shocks=tuple(shocks), backend_mask=bmask, zone_mask=zmask)

    @property
    def labels(self) -> list[str]:
        return [s.text for s in self.shocks]

    def change_times(self, horizon_s: float) -> list[float]:
        """Times in (0, horizon) at which some shock starts or ends."""
        times = {t for s in self.shocks for t in (s.start_s, s.end_s) if 0.0 < t < horizon_s}
        return sorted(times)

    def backends_at(self, t: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        """(healthy, power factor) of every backend at time ``t``."""
        n_b = self.backend_mask.shape[1]
        healthy, power = np.ones(n_b, dtype=bool), np.ones(n_b)
        for s, mask in zip(self.shocks, self.backend_mask, strict=True):
            if not s.active(t):
                continue
            if s.kind in ("outage", "deny-site", "embargo"):
                healthy &= ~mask
            elif s.kind == "power-cut":
                power = np.where(mask, power * s.factor, power)
        return healthy, power

    def surge(self, times: NDArray[np.float64], n_zones: int) -> NDArray[np.float64]:
        """Arrival multiplier ``[zone, time]`` at each of ``times``."""
        out = np.ones((n_zones, len(times)))
        for s, mask in zip(self.shocks, self.zone_mask, strict=True):
            if s.kind == "surge":
                on = (times >= s.start_s) & (times < s.end_s)
                out[np.ix_(mask, on)] *= s.factor
        return out

    def surge_rows(self, t: NDArray[np.float64], zone: NDArray[np.int64]) -> NDArray[np.float64]:
        """Arrival multiplier of requests at times ``t`` from zones ``zone``."""
        out = np.ones(len(t))
        for s, mask in zip(self.shocks, self.zone_mask, strict=True):
            if s.kind == "surge":
                out = np.where((t >= s.start_s) & (t < s.end_s) & mask[zone], out * s.factor, out)
        return out
