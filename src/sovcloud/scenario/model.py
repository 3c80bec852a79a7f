"""The world model: one validated description of the cloud to plan, simulate and operate.

A scenario file (YAML) is read by :mod:`sovcloud.scenario` (which resolves ``extends``, reports
every problem at once, and generates demand zones from GeoNames) into a :class:`Scenario`, which
:mod:`sovcloud.world.compiled` turns into arrays over named dimensions.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator

from sovcloud.errors import UnknownEntity
from sovcloud.scenario.catalog import Accelerator, ModelArch
from sovcloud.scenario.demand import DemandAssumptions, DemandZone, Workload
from sovcloud.scenario.entity import Entity, Record
from sovcloud.scenario.rules import Policies
from sovcloud.scenario.shocks import Shock
from sovcloud.scenario.sites import Site

__all__ = ["Headline", "Horizon", "Operator", "Planning", "Programme", "Scenario"]

_E = TypeVar("_E", bound=Entity)


class Operator(Entity):
    """The cloud operator; its headquarters drive export-control and screening rules."""

    name: str
    hq_country: str = Field(min_length=2, max_length=2)


class Horizon(Record):
    """Planning periods (calendar years), discounting and currency."""

    periods: list[int] = Field(min_length=1)
    discount_rate: float = Field(0.08, ge=0, lt=1)
    currency: Literal["USD"] = "USD"
    policy_date: str = Field(
        "07-01", pattern=r"^\d\d-\d\d$", description="MM-DD within each period on which rules are evaluated"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Horizon:
        if sorted(set(self.periods)) != self.periods:
            raise ValueError(f"periods must be increasing and unique, got {self.periods}")
        return self


class Programme(Entity):
    """The start-up programme: free-token grants and cloud credits."""

    free_tokens: NonNegativeInt
    credits_usd: NonNegativeFloat
    grant_expiry_days: PositiveInt = 365


class Headline(Entity):
    """Public headline figures the scenario is checked against (footprint)."""

    availability_zones: NonNegativeInt
    regions: NonNegativeInt
    regions_in_china: NonNegativeInt | None = None
    as_of: str


class Planning(Record):
    """Planner settings that belong to the scenario (the CLI can override the solver ones)."""

    time_slices: PositiveInt = Field(6, description="slices of the representative day; must divide 24")
    unserved_penalty_usd_per_mtok: float = Field(
        2.0, gt=0, description="cost of a million tokens of demand left unserved (lost revenue)"
    )
    resilience_share: float = Field(
        0.5, ge=0, le=1, description="share of a residency group's served peak that must survive losing any one site"
    )
    target_utilization: float = Field(
        0.95, gt=0, le=1,
        description="most of each chip's capacity at its operating point a plan may use for interactive work in a "
                    "slice; the queueing headroom (slo_tail, burstiness) usually binds first",
    )
    slo_tail: float = Field(
        0.02, gt=0, lt=1,
        description="share of interactive requests the planner lets wait past their TTFT target (Erlang C with "
                    "bursty arrivals sets each deployment's utilisation from it)",
    )
    burstiness: float = Field(
        0.25, ge=0, le=10,
        description="coefficient of variation of the per-minute arrival rate the headroom is planned for "
                    "(0.244 in the Azure LLM conversation trace; the simulator's default)",
    )
    batch_reserve: float = Field(
        0.05, ge=0, lt=1,
        description="share of each deployment's slots deferred batch work leaves free for interactive arrivals",
    )
    objective: Literal["cost", "served"] = "cost"
    max_route_pairs: PositiveInt = Field(
        6_000, description="above this many feasible (demand group, site) pairs, keep each group's nearest sites"
    )
    mip_gap: float = Field(0.01, gt=0, lt=1)
    time_limit_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _slices(self) -> Planning:
        if 24 % self.time_slices:
            raise ValueError(f"time_slices {self.time_slices} does not divide 24; use 1, 2, 3, 4, 6, 8, 12 or 24")
        return self


class Scenario(Record):
    """The whole world model of one planning run."""

    name: str
    description: str = ""
    extends: str | None = None
    operator: Operator
    horizon: Horizon
    headline: Headline | None = None
    sites: list[Site]
    accelerators: list[Accelerator]
    models: list[ModelArch]
    workloads: list[Workload]
    demand: DemandAssumptions
    policies: Policies
    programme: Programme
    planning: Planning = Field(default_factory=Planning)
    shocks: list[Shock] = Field(default_factory=list, description="overlays applied when the scenario is compiled")
    applied_shocks: list[str] = Field(default_factory=list, description="shocks already applied (labels)")

    @staticmethod
    def _find(items: list[_E], key: str, what: str) -> _E:
        for item in items:
            if item.id == key:
                return item
        known = ", ".join(i.id for i in items[:20])
        raise UnknownEntity(f"unknown {what} '{key}'; known: {known}{' ...' if len(items) > 20 else ''}")

    def chip(self, chip_id: str) -> Accelerator:
        return self._find(self.accelerators, chip_id, "chip")

    def model(self, model_id: str) -> ModelArch:
        return self._find(self.models, model_id, "model")

    def site(self, site_id: str) -> Site:
        return self._find(self.sites, site_id, "site")

    def workload(self, workload_id: str) -> Workload:
        return self._find(self.workloads, workload_id, "workload")

    def zone(self, zone_id: str) -> DemandZone:
        return self._find(self.demand.zones, zone_id, "demand zone")
