"""Policy as masks, computed once: residency [zone, site], export control [chip, site, period].

Sets
    Z zones, S sites, C chips, P periods; J jurisdictions (ISO codes and named groups).
Residency
    For zone z with origin jurisdiction o(z), the applicable rules R(z) are those whose ``origin``
    (groups expanded) contains o(z). If R(z) is empty, ``default_allowed`` applies. Otherwise the
    allowed countries are the intersection of every applicable rule's ``allowed`` set, so all
    rules that govern the data hold at once. ``residency[z, s] = country(s) in allowed(z)``.
Export control
    Rules are read in order; for each (c, s, p) the status is that of the last rule that matches
    chip c (id, ``vendor:NAME``, ``origin:CC`` or ``*``), the operator's HQ, the country of s, and
    is in force on period p's policy date. Codes: 0 allowed, 1 licensed, 2 banned; a licensed
    rule counts as banned until its ``licence_delay_months`` have passed since it took effect.
    ``export_allowed = status != banned``; licensed chips carry a fee share and a licence delay.
A forbidden pair is False in these masks, so consumers never create a variable, a candidate or
a score for it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sovcloud.errors import Problem, ScenarioError
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.rules import ExportRule

__all__ = ["EXPORT_CODES", "ExportMasks", "add_months", "decision_date", "expand", "export_masks", "policy_dates",
           "residency_mask"]

EXPORT_CODES: dict[str, int] = {"allowed": 0, "licensed": 1, "banned": 2}


def expand(groups: dict[str, list[str]], items: list[str]) -> frozenset[str] | None:
    """Countries named by ``items`` with groups expanded; ``None`` means anywhere ('*')."""
    out: set[str] = set()
    stack = list(items)
    seen: set[str] = set()
    while stack:
        item = stack.pop()
        if item == "*":
            return None
        if item in groups:
            if item in seen:
                continue
            seen.add(item)
            stack.extend(groups[item])
        else:
            out.add(item)
    return frozenset(out)


def add_months(date: dt.date, months: int) -> dt.date:
    """``date`` plus whole calendar months (the day clipped to the month's last: Jan 31 + 1 month = Feb 28/29)."""
    y, m = divmod(date.month - 1 + months, 12)
    year, month = date.year + y, m + 1
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(date.day, last))


def decision_date(scenario: Scenario) -> dt.date:
    """The date build and lease decisions are taken: January 1 of the first period (lead times count from it)."""
    return dt.date(int(scenario.horizon.periods[0]), 1, 1)


def policy_dates(scenario: Scenario) -> list[dt.date]:
    """The date within each period on which rules are evaluated."""
    month, day = (int(x) for x in scenario.horizon.policy_date.split("-"))
    try:
        return [dt.date(p, month, day) for p in scenario.horizon.periods]
    except ValueError as exc:
        raise ScenarioError([Problem("<scenario>", None, "horizon.policy_date", scenario.horizon.policy_date,
                                     "not a calendar date", "use MM-DD, e.g. 07-01")]) from exc


def residency_mask(scenario: Scenario) -> tuple[NDArray[np.bool_], list[str]]:
    """(mask [zone, site], id of the governing rule(s) per zone, '' for the default)."""
    groups = scenario.policies.groups
    rules = [(r, expand(groups, r.origin), expand(groups, r.allowed))
             for r in scenario.policies.residency if r.data_class == "personal"]
    default = expand(groups, scenario.policies.default_allowed)
    site_country = np.array([s.country for s in scenario.sites])
    cache: dict[str, tuple[NDArray[np.bool_], str]] = {}
    zones = scenario.demand.zones
    mask = np.zeros((len(zones), len(site_country)), dtype=bool)
    governing: list[str] = []
    for i, zone in enumerate(zones):
        origin = zone.origin
        if origin not in cache:
            allowed: frozenset[str] | None = None
            names: list[str] = []
            applicable = [(r, a) for r, o, a in rules if o is None or origin in o]
            for rule, allow in applicable:
                names.append(rule.id)
                if allow is not None:
                    allowed = allow if allowed is None else allowed & allow
            if not applicable:
                allowed = default
            row = np.ones(len(site_country), dtype=bool) if allowed is None \
                else np.isin(site_country, sorted(allowed))
            cache[origin] = (row, "+".join(names))
        mask[i], name = cache[origin]
        governing.append(name)
    return mask, governing


@dataclass(frozen=True)
class ExportMasks:
    """Export-control outcome per [chip, site, period]."""

    status: NDArray[np.int8]
    fee_share: NDArray[np.float64]
    licence_delay_months: NDArray[np.float64]
    rule: NDArray[np.int16]  # index of the deciding rule in policies.export (-1: none)

    @property
    def allowed(self) -> NDArray[np.bool_]:
        return np.asarray(self.status != EXPORT_CODES["banned"])


def _add_months(day: dt.date, months: int) -> dt.date:
    total = day.month - 1 + months
    return dt.date(day.year + total // 12, total % 12 + 1, min(day.day, 28))


def _chip_match(rule: ExportRule, scenario: Scenario) -> NDArray[np.bool_]:
    out = np.zeros(len(scenario.accelerators), dtype=bool)
    for pattern in rule.chips:
        for j, chip in enumerate(scenario.accelerators):
            if pattern == "*" or pattern == chip.id \
                    or (pattern.startswith("vendor:") and pattern[7:].casefold() == chip.vendor.casefold()) \
                    or (pattern.startswith("origin:") and pattern[7:] == chip.origin_country):
                out[j] = True
    return out


def export_masks(scenario: Scenario) -> ExportMasks:
    """Evaluate the export rules for every chip, site and period (last match wins)."""
    groups = scenario.policies.groups
    n_c, n_s, n_p = len(scenario.accelerators), len(scenario.sites), len(scenario.horizon.periods)
    status = np.zeros((n_c, n_s, n_p), dtype=np.int8)
    fee = np.zeros((n_c, n_s, n_p))
    delay = np.zeros((n_c, n_s, n_p))
    which = np.full((n_c, n_s, n_p), -1, dtype=np.int16)
    site_country = np.array([s.country for s in scenario.sites])
    dates = policy_dates(scenario)
    hq = scenario.operator.hq_country
    for k, rule in enumerate(scenario.policies.export):
        hq_set = expand(groups, rule.operator_hq)
        if hq_set is not None and hq not in hq_set:
            continue
        sites_set = expand(groups, rule.site_country)
        site_ok = np.ones(n_s, dtype=bool) if sites_set is None else np.isin(site_country, sorted(sites_set))
        period_ok = np.array([rule.in_force(d) for d in dates])
        hit = _chip_match(rule, scenario)[:, None, None] & site_ok[None, :, None] & period_ok[None, None, :]
        code = np.full(n_p, EXPORT_CODES[rule.status], dtype=np.int8)
        if rule.status == "licensed" and rule.licence_delay_months:
            # a licence takes time: until it can be granted the chip cannot be bought
            granted = [d >= _add_months(rule.since, rule.licence_delay_months) for d in dates]
            code = np.where(granted, code, EXPORT_CODES["banned"]).astype(np.int8)
        status[hit] = np.broadcast_to(code[None, None, :], hit.shape)[hit]
        fee[hit] = rule.fee_share
        delay[hit] = rule.licence_delay_months
        which[hit] = k
    return ExportMasks(status=status, fee_share=fee, licence_delay_months=delay, rule=which)
