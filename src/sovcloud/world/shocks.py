"""Shocks applied: a new scenario with each shock of :mod:`sovcloud.scenario.shocks` carried out in order."""

from __future__ import annotations

import datetime as dt

from sovcloud.errors import Problem, ScenarioError
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.rules import ExportRule
from sovcloud.scenario.shocks import Shock

__all__ = ["apply_shocks"]


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
