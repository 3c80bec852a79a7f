"""The compiled world: every scenario number as arrays over named dimensions.

``compile(scenario)`` returns a :class:`World` whose ``ds`` is an ``xarray.Dataset`` over the
dimensions zone, site, chip, model, workload, period and hour (UTC hour of a representative day),
plus ``precision`` for throughput tables. Every consumer (planner, simulator, gateway, report)
reads these arrays rather than the scenario objects.

Demand (tokens per UTC hour)::

    demand[z, m, w, p, h] = users[z] * surge[z] * tpud[m, w] * growth[p] * shape[w, z, h] / 24
    shape[w, z, h]        = diurnal_w(local hour h + utc_offset[z]) / mean(diurnal_w)

with the local-hour profile interpolated linearly for fractional offsets (e.g. UTC+5:30).

Site availability: a site serves in period p when ``available_from <= p < retire_from``; a
candidate site also needs its shortest option lead time plus the investment-screening delay for
the operator's investor class, counted from the horizon start, to end before p's policy date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from sovcloud.geo import countries, haversine_km
from sovcloud.physics.latency import rtt_ms
from sovcloud.policy.masks import add_months, decision_date, export_masks, policy_dates, residency_mask
from sovcloud.scenario.model import Scenario
from sovcloud.vocab import PRECISION_BYTES
from sovcloud.world.shocks import apply_shocks

__all__ = ["World", "compile", "utc_offsets_h"]

_RISK_WEEKS = {"low": 1.0, "medium": 1.0, "high": 1.5, "very_high": 2.0}


@dataclass(frozen=True)
class World:
    """A scenario and its compiled arrays."""

    scenario: Scenario
    ds: xr.Dataset

    @property
    def zones(self) -> list[str]:
        return [str(z) for z in self.ds.zone.values]

    @property
    def sites(self) -> list[str]:
        return [str(s) for s in self.ds.site.values]


def utc_offsets_h(timezones: list[str], on: dt.datetime) -> NDArray[np.float64]:
    """UTC offset in hours of each IANA time zone at instant ``on`` (one lookup per distinct zone)."""
    cache: dict[str, float] = {}
    out = np.empty(len(timezones))
    for i, name in enumerate(timezones):
        if name not in cache:
            offset = on.astimezone(ZoneInfo(name)).utcoffset()
            cache[name] = offset.total_seconds() / 3600.0 if offset is not None else 0.0
        out[i] = cache[name]
    return out


def _adoption(scenario: Scenario) -> NDArray[np.float64]:
    a = scenario.demand
    table = countries()
    out = np.empty(len(a.zones))
    for i, z in enumerate(a.zones):
        continent = table[z.country].continent if z.country in table else ""
        out[i] = a.adoption_by_country.get(z.country, a.adoption_by_continent.get(continent, a.adoption_default))
    return out


def _site_available(scenario: Scenario, dates: list[dt.date]) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    periods = np.array(scenario.horizon.periods)
    screening = {s.country: s for s in scenario.policies.screening}
    start = decision_date(scenario)
    avail = np.ones((len(scenario.sites), len(periods)), dtype=bool)
    delay_weeks = np.zeros(len(scenario.sites))
    for i, site in enumerate(scenario.sites):
        if site.available_from is not None:
            avail[i] &= periods >= site.available_from
        if site.retire_from is not None:
            avail[i] &= periods < site.retire_from
        scr = screening.get(site.country)
        if scr is not None and site.kind == "candidate":
            risk = scr.risk_by_investor.get(scenario.policies.investor_class, "medium")
            delay_weeks[i] = scr.delay_weeks_typical * _RISK_WEEKS[risk]
            if scr.denied:
                avail[i] = False
        if site.kind == "candidate":
            # lead times in calendar months from the decision date, then the screening delay
            ready = add_months(start, min(o.lead_time_months for o in site.options)) \
                + dt.timedelta(days=delay_weeks[i] * 7)
            avail[i] &= np.array([d >= ready for d in dates])
    return avail, delay_weeks


Vars = dict[str, tuple[Any, Any]]


def _demand_tokens_per_h(sc: Scenario, users: np.ndarray, surge: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``demand[z, m, w, p, h]``: users x surge x tokens per user-day x growth x the local diurnal shape / 24.

    Each workload's diurnal profile (normalised to mean 1) is read at each zone's local hour, interpolating
    linearly between whole hours for fractional UTC offsets.
    """
    models, workloads = sc.models, sc.workloads
    hours = np.arange(24)
    tpud = np.zeros((len(models), len(workloads)))
    m_index = {m.id: i for i, m in enumerate(models)}
    w_index = {w.id: i for i, w in enumerate(workloads)}
    for m_id, per_w in sc.demand.tokens_per_user_day.items():
        for w_id, tokens in per_w.items():
            tpud[m_index[m_id], w_index[w_id]] = tokens
    profile = np.array([w.diurnal for w in workloads], dtype=np.float64)
    profile /= profile.mean(axis=1, keepdims=True)
    local = (hours[None, :] + offsets[:, None]) % 24.0  # [z, h]
    lo = np.floor(local).astype(int) % 24
    hi = (lo + 1) % 24
    frac = local - np.floor(local)
    shape = profile[:, lo] * (1 - frac)[None] + profile[:, hi] * frac[None]  # [w, z, h]
    growth = np.array([sc.demand.growth[p] for p in sc.horizon.periods])
    demand: np.ndarray = ((users * surge)[:, None, None, None, None] * tpud[None, :, :, None, None]
            * growth[None, None, None, :, None] * np.transpose(shape, (1, 0, 2))[:, None, :, None, :] / 24.0)
    return demand


def _zone_vars(sc: Scenario, pop: np.ndarray, users: np.ndarray, offsets: np.ndarray) -> Vars:
    zones = sc.demand.zones
    return {
        "zone_lat": ("zone", np.array([z.lat for z in zones])), "zone_lon": ("zone", np.array([z.lon for z in zones])),
        "zone_population": ("zone", pop), "zone_users": ("zone", users),
        "zone_country": ("zone", np.array([z.country for z in zones])),
        "zone_origin": ("zone", np.array([z.origin for z in zones])),
        "zone_kind": ("zone", np.array([z.kind for z in zones])),
        "zone_utc_offset_h": ("zone", offsets),
    }


def _site_vars(sc: Scenario, dates: list[dt.date], periods: list[int]) -> Vars:
    sites = sc.sites
    available, screening_weeks = _site_available(sc, dates)
    installed = np.array([[float(s.installed_power_mw.get(p, 0.0)) for p in periods] for s in sites])
    option_cap = np.array([[sum(o.power_cap_mw.get(p, 0.0) for o in s.options) for p in periods] for s in sites])
    return {
        "site_lat": ("site", np.array([s.lat for s in sites])), "site_lon": ("site", np.array([s.lon for s in sites])),
        "site_country": ("site", np.array([s.country for s in sites])),
        "site_kind": ("site", np.array([s.kind for s in sites])),
        "site_status": ("site", np.array([s.status for s in sites])),
        "site_pue": ("site", np.array([s.pue for s in sites])),
        "site_wue_l_per_kwh": ("site", np.array([s.wue_l_per_kwh for s in sites])),
        "site_carbon_g_per_kwh": ("site", np.array([s.carbon_g_per_kwh for s in sites])),
        "site_electricity_usd_per_kwh": ("site", np.array([s.electricity_usd_per_kwh for s in sites])),
        "site_renewable_max_share": ("site", np.array([s.renewable.max_share for s in sites])),
        "site_renewable_usd_per_mwh": ("site", np.array([s.renewable.price_usd_per_mwh for s in sites])),
        "site_availability_zones": ("site", np.array([s.availability_zones for s in sites])),
        "site_screening_delay_weeks": ("site", screening_weeks),
        "site_available": (("site", "period"), available),
        "installed_power_mw": (("site", "period"), installed),
        "option_power_cap_mw": (("site", "period"), option_cap),
    }


def _catalog_vars(sc: Scenario, periods: list[int], precisions: list[str]) -> Vars:
    chips, models, workloads = sc.accelerators, sc.models, sc.workloads
    tflops = np.array([[c.tflops.get(p, np.nan) for p in precisions] for c in chips])  # type: ignore[call-overload]
    supply = np.array([[float({k: float(v) for k, v in c.supply_cap.items()}.get(p, np.inf)) for p in periods]
                       for c in chips])
    return {
        "chip_memory_gb": ("chip", np.array([c.memory_gb for c in chips])),
        "chip_mem_bw_tbps": ("chip", np.array([c.mem_bw_tbps or np.nan for c in chips])),
        "chip_tdp_w": ("chip", np.array([c.tdp_w for c in chips])),
        "chip_unit_price_usd": ("chip", np.array([c.unit_price_usd for c in chips])),
        "chip_server_chips": ("chip", np.array([c.server_chips for c in chips])),
        "chip_tflops": (("chip", "precision"), tflops),
        "chip_supply_cap": (("chip", "period"), supply),
        "model_total_params": ("model", np.array([m.total_params for m in models])),
        "model_active_params": ("model", np.array([m.active_params for m in models])),
        "model_kv_bytes_per_token": ("model", np.array([m.kv_bytes_per_token("bf16") for m in models])),
        "workload_ttft_s": ("workload", np.array([w.ttft_s or np.nan for w in workloads])),
        "workload_tpot_s": ("workload", np.array([w.tpot_s or np.nan for w in workloads])),
        "workload_rtt_budget_ms": ("workload", np.array([w.rtt_budget_ms or np.nan for w in workloads])),
        "workload_deadline_h": ("workload", np.array([w.deadline_h or np.nan for w in workloads])),
        "workload_kind": ("workload", np.array([w.kind for w in workloads])),
    }


def _pair_vars(sc: Scenario) -> Vars:
    """Zone-site distance, RTT and residency; chip-site-period export status (policy masks, computed once)."""
    zones, sites = sc.demand.zones, sc.sites
    distance = haversine_km(np.array([z.lat for z in zones])[:, None], np.array([z.lon for z in zones])[:, None],
                            np.array([s.lat for s in sites])[None], np.array([s.lon for s in sites])[None])
    residency, governing = residency_mask(sc)
    export = export_masks(sc)
    return {
        "distance_km": (("zone", "site"), distance),
        "rtt_ms": (("zone", "site"), rtt_ms(distance)),
        "residency": (("zone", "site"), residency),
        "residency_rule": ("zone", np.array(governing)),
        "export_status": (("chip", "site", "period"), export.status),
        "export_allowed": (("chip", "site", "period"), export.allowed),
        "export_fee_share": (("chip", "site", "period"), export.fee_share),
        "export_licence_delay_months": (("chip", "site", "period"), export.licence_delay_months),
    }


def compile(scenario: Scenario) -> World:
    """Compile ``scenario`` (its shocks applied first) into arrays over named dimensions."""
    sc = apply_shocks(scenario) if scenario.shocks else scenario
    zones = sc.demand.zones
    periods = list(sc.horizon.periods)
    dates = policy_dates(sc)
    precisions = list(PRECISION_BYTES)
    pop = np.array([z.population for z in zones], dtype=np.float64)
    users = np.array([z.users if z.users is not None else np.nan for z in zones])
    users = np.where(np.isnan(users), pop * _adoption(sc), users)
    surge = np.array([sc.demand.surge.get(z.id, sc.demand.surge.get(z.country, 1.0)) for z in zones])
    offsets = utc_offsets_h([z.timezone for z in zones], dt.datetime.combine(dates[0], dt.time(12), dt.UTC))
    per_period = [float(sc.policies.budget.per_period_usd.get(p, np.inf)) for p in periods]
    targets = [float(sc.policies.renewable_target.get(p, 0.0)) for p in periods]
    data_vars: Vars = {
        **_zone_vars(sc, pop, users, offsets),
        **_site_vars(sc, dates, periods),
        **_catalog_vars(sc, periods, precisions),
        **_pair_vars(sc),
        "demand_tokens_per_h": (("zone", "model", "workload", "period", "hour"),
                                _demand_tokens_per_h(sc, users, surge, offsets)),
        "budget_per_period_usd": ("period", np.array(per_period)),
        "renewable_target": ("period", np.array(targets)),
    }
    ds = xr.Dataset(
        data_vars=data_vars,
        coords={
            "zone": [z.id for z in zones], "site": [s.id for s in sc.sites], "chip": [c.id for c in sc.accelerators],
            "model": [m.id for m in sc.models], "workload": [w.id for w in sc.workloads],
            "period": periods, "hour": np.arange(24), "precision": precisions,
        },
        attrs={"scenario": sc.name, "operator_hq": sc.operator.hq_country, "shocks": "; ".join(sc.applied_shocks),
               "budget_total_usd": sc.policies.budget.total_usd},
    )
    return World(scenario=sc, ds=ds)
