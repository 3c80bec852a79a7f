"""Shocks: scenario overlays for what the news is about, used by the planner and the simulator.

A shock is a small, typed change applied to a scenario before it is compiled:

* ``embargo``: chips (id, ``vendor:NAME``, ``origin:CC`` or ``*``) banned from a date, optionally
  only in some site countries (an export rule appended last, so it wins);
* ``deny-site``: investment screening refuses a candidate site (it never opens);
* ``power-cut``: a site's installed and optional power scaled by ``factor`` from a period;
* ``surge``: demand of a zone or country multiplied by ``factor``;
* ``outage``: a site is down from a period (no serving at all).

On the command line a shock is written ``kind:target[:factor][@when]``, for example
``embargo:vendor:NVIDIA@2026-01-01``, ``deny-site:eu-netherlands``, ``power-cut:eu-central-1:0.5@2026``,
``surge:DE:1.5``, ``outage:eu-west-1@2027``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat, ValidationError

from .entity import Record
from .errors import Problem, ScenarioError
from .rules import ExportRule

if TYPE_CHECKING:
    from .world import Scenario

__all__ = ["Shock", "apply_shocks", "parse_shock"]


class Shock(Record):
    """One overlay on a scenario (see module docstring)."""

    kind: Literal["embargo", "deny-site", "power-cut", "surge", "outage"]
    target: str = Field(min_length=1)
    factor: PositiveFloat = 1.0
    since: dt.date | None = None
    period: int | None = None
    site_country: list[str] = Field(default_factory=lambda: ["*"])

    def label(self) -> str:
        when = f"@{self.period or self.since}" if (self.since or self.period) else ""
        factor = f":{self.factor:g}" if self.kind in ("power-cut", "surge") else ""
        return f"{self.kind}:{self.target}{factor}{when}"


def parse_shock(text: str) -> Shock:
    """Parse ``kind:target[:factor][@when]``; raises :class:`ScenarioError` with a fix hint."""
    body, _, when = text.partition("@")
    kind, _, rest = body.partition(":")
    hint = "write kind:target[:factor][@when], e.g. embargo:vendor:NVIDIA@2026-01-01 or power-cut:eu-central-1:0.5@2026"
    factor = 1.0
    target = rest
    if kind in ("power-cut", "surge"):
        target, _, f = rest.rpartition(":")
        try:
            factor = float(f)
        except ValueError as exc:
            raise ScenarioError([Problem("--shock", None, "factor", repr(f), "not a number", hint)]) from exc
    data: dict[str, object] = {"kind": kind, "target": target, "factor": factor}
    if when and kind in ("surge", "deny-site"):
        raise ScenarioError([Problem("--shock", None, "when", repr(when), f"a {kind} shock applies to the whole "
                                     "horizon and takes no date", f"write {body} without @{when}")])
    if when:
        if len(when) == 4 and when.isdigit():
            data["period"] = int(when)
            data["since"] = dt.date(int(when), 1, 1)
        else:
            data["since"] = when
    try:
        return Shock.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ScenarioError([Problem("--shock", None, ".".join(str(x) for x in err["loc"]) or "shock", repr(text),
                                     str(err["msg"]), hint)]) from exc


def _chip_pattern_known(scenario: Scenario, pattern: str) -> bool:
    chips = scenario.accelerators
    if pattern == "*" or pattern in {c.id for c in chips}:
        return True
    if pattern.startswith("vendor:"):
        return pattern[7:].casefold() in {c.vendor.casefold() for c in chips}
    if pattern.startswith("origin:"):
        return pattern[7:] in {c.origin_country for c in chips}
    return False


def _first_period(scenario: Scenario, shock: Shock) -> int:
    if shock.period is not None:
        return shock.period
    if shock.since is not None:
        return shock.since.year
    return scenario.horizon.periods[0]


def apply_shocks(scenario: Scenario, shocks: list[Shock] | None = None) -> Scenario:
    """A new scenario with ``shocks`` (default: the scenario's own) applied in order.

    The result lists them under ``applied_shocks`` and has no pending ``shocks``, so applying
    twice is harmless. Unknown targets are errors.
    """
    shocks = list(scenario.shocks) if shocks is None else shocks
    sc = scenario.model_copy(update={"shocks": []})
    for i, shock in enumerate(shocks):
        where = f"shocks[{i}]"
        if shock.kind == "embargo" and not _chip_pattern_known(sc, shock.target):
            raise ScenarioError([Problem("<shocks>", None, f"{where}.target", shock.target, "matches no chip",
                                         "use a chip id, vendor:NAME, origin:CC or *, e.g. vendor:NVIDIA")])
        if shock.kind == "surge" and shock.target not in {z.id for z in sc.demand.zones} \
                and shock.target not in {z.country for z in sc.demand.zones}:
            raise ScenarioError([Problem("<shocks>", None, f"{where}.target", shock.target,
                                         "matches no demand zone or country", "use a zone id or an ISO code, e.g. DE")])
        if shock.kind == "embargo":
            rule = ExportRule(id=f"shock-{i}", chips=[shock.target], site_country=shock.site_country,
                              since=shock.since or dt.date(sc.horizon.periods[0], 1, 1), status="banned",
                              note=f"shock {shock.label()}", confidence="inferred", editorial=True)
            sc = sc.model_copy(update={"policies": sc.policies.model_copy(
                update={"export": [*sc.policies.export, rule]})})
            continue
        if shock.kind == "surge":
            surge = dict(sc.demand.surge)
            surge[shock.target] = surge.get(shock.target, 1.0) * shock.factor
            sc = sc.model_copy(update={"demand": sc.demand.model_copy(update={"surge": surge})})
            continue
        ids = [s.id for s in sc.sites]
        if shock.target not in ids:
            raise ScenarioError([Problem("<shocks>", None, f"{where}.target", shock.target, "unknown site",
                                         f"use a site id such as {ids[0]}")])
        first = _first_period(sc, shock)
        sites = []
        for site in sc.sites:
            if site.id != shock.target:
                sites.append(site)
                continue
            if shock.kind in ("deny-site", "outage"):
                # refused by screening: never serves; outage: serves no more from the shock's period
                stop = sc.horizon.periods[0] if shock.kind == "deny-site" else first
                if site.retire_from is not None:
                    stop = min(stop, site.retire_from)
                site = site.model_copy(update={"retire_from": stop})
            else:  # power-cut
                installed = {p: mw * (shock.factor if p >= first else 1.0) for p, mw in site.installed_power_mw.items()}
                options = [o.model_copy(update={"power_cap_mw": {p: mw * (shock.factor if p >= first else 1.0)
                                                                 for p, mw in o.power_cap_mw.items()}})
                           for o in site.options]
                site = site.model_copy(update={"installed_power_mw": installed, "options": options})
            sites.append(site)
        sc = sc.model_copy(update={"sites": sites})
    return sc.model_copy(update={"applied_shocks": [*scenario.applied_shocks, *(x.label() for x in shocks)]})
