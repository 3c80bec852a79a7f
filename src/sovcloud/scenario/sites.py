"""Sites: existing cloud regions and candidate datacentres, with their build/lease options.

A site is a place where accelerators can run. Existing regions come with installed power and
availability zones; candidate sites (announced new datacentres, colocation leases from a partner
operator) only have options. Every option states its capex, opex, lead time and caps per period;
every site states its efficiency (PUE, WUE), grid carbon intensity, electricity price and the
renewable contracts it can buy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from sovcloud.scenario.entity import Entity, Id, Record
from sovcloud.vocab import OptionKind, SiteKind, SiteStatus

__all__ = ["RenewableOffer", "Site", "SiteOption"]


class SiteOption(Record):
    """One way to add capacity at a site: build, lease (colocation) or expand an existing campus."""

    id: Id
    kind: OptionKind
    partner: str | None = Field(None, description="lessor for a colocation lease")
    fixed_capex_usd: NonNegativeFloat = Field(0.0, description="one-off cost of opening (land, grid connection)")
    capex_usd_per_mw: NonNegativeFloat = Field(0.0, description="one-off cost per MW of IT power (build)")
    opex_usd_per_mw_year: NonNegativeFloat = Field(0.0, description="fixed operations cost per MW-year")
    lease_usd_per_kw_month: NonNegativeFloat = Field(0.0, description="colocation rent per kW of IT power")
    lead_time_months: NonNegativeInt = Field(description="from decision to first power")
    power_cap_mw: dict[int, NonNegativeFloat] = Field(
        description="largest total IT power this option can provide in each period (MW, cumulative); "
        "missing periods mean 0"
    )
    space_cap_racks: NonNegativeInt | None = Field(None, description="racks this option can add; null = no cap")
    water_cap_m3_per_year: NonNegativeFloat | None = Field(None, description="null = no cap")
    lifetime_years: PositiveInt = 20


class RenewableOffer(Record):
    """Renewable energy contracts (PPAs / green certificates) a site can buy."""

    max_share: float = Field(0.0, ge=0, le=1, description="largest share of the site's energy coverable")
    price_usd_per_mwh: NonNegativeFloat = Field(0.0, description="premium over grid power, US$/MWh")


class Site(Entity):
    """A region or candidate datacentre."""

    name: str
    city: str
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    kind: SiteKind
    status: SiteStatus
    operated_by: Literal["own", "partner"] = "own"
    availability_zones: NonNegativeInt = 0
    founded: int | None = None
    available_from: int | None = Field(None, description="first period the site can serve (null = any)")
    retire_from: int | None = Field(None, description="first period the site no longer serves")
    installed_power_mw: dict[int, NonNegativeFloat] = Field(
        default_factory=dict, description="IT power already usable for AI serving, per period (MW)"
    )
    installed_chips: dict[Id, NonNegativeInt] = Field(
        default_factory=dict, description="accelerators already installed, by chip id"
    )
    allowed_chips: list[Id] | None = Field(None, description="chips this site can host; null = any")
    options: list[SiteOption] = Field(default_factory=list)
    pue: float = Field(ge=1.0, le=3.0)
    wue_l_per_kwh: NonNegativeFloat
    carbon_g_per_kwh: NonNegativeFloat
    electricity_usd_per_kwh: PositiveFloat
    renewable: RenewableOffer = Field(default_factory=RenewableOffer)

    @model_validator(mode="after")
    def _consistent(self) -> Site:
        if self.kind == "candidate" and self.availability_zones:
            raise ValueError("a candidate site has no availability zones yet; set availability_zones: 0")
        if self.kind == "candidate" and not self.options:
            raise ValueError("a candidate site needs at least one build or lease option")
        if (
            self.available_from is not None
            and self.retire_from is not None
            and self.retire_from <= self.available_from
        ):
            raise ValueError("retire_from must be after available_from")
        ids = [o.id for o in self.options]
        if len(ids) != len(set(ids)):
            raise ValueError(f"option ids repeat at this site: {sorted(ids)}")
        return self

    @property
    def is_active(self) -> bool:
        return self.status.startswith("active")
