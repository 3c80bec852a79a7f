"""Policy rules as written in a scenario: residency, export control, screening, targets, budget.

Jurisdictions are ISO 3166-1 alpha-2 country codes or group names defined in ``groups`` (groups
may contain groups, e.g. EEA = [EU, IS, LI, NO]). ``*`` means anywhere. The rules are turned into
boolean masks once, by :mod:`sovcloud.policy`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, NonNegativeFloat, model_validator

from sovcloud.scenario.entity import Entity, Record
from sovcloud.vocab import ExportStatus

__all__ = [
    "Budget",
    "ExportRule",
    "Policies",
    "ResidencyRule",
    "Screening",
]


class ResidencyRule(Entity):
    """Data from ``origin`` may only be processed in ``allowed`` jurisdictions."""

    origin: list[str] = Field(min_length=1, description="jurisdictions whose data this rule governs")
    allowed: list[str] = Field(min_length=1, description="where processing may happen ('*' = anywhere)")
    data_class: str = Field("personal", description="the class of data the rule is for")
    localization: Literal["none", "sectoral", "conditional", "primary_copy", "strict"] = "none"
    confidence: Literal["high", "medium", "low", "inferred"] = "medium"
    editorial: bool = Field(False, description="a planning heuristic rather than the letter of the law")


class ExportRule(Entity):
    """Export-control status of chips for an operator HQ and a site country, from a date.

    Chips are matched by id, ``vendor:NAME``, ``origin:CC`` or ``*``. Rules are read in order
    and the last one that matches and is in force on the date wins, so later rules (and overlays
    appended by ``extends``) override earlier ones.
    """

    chips: list[str] = Field(min_length=1)
    operator_hq: list[str] = Field(default_factory=lambda: ["*"])
    site_country: list[str] = Field(default_factory=lambda: ["*"])
    since: dt.date
    until: dt.date | None = None
    status: ExportStatus
    fee_share: float = Field(0.0, ge=0, le=1, description="share of the price paid as a licence fee")
    licence_delay_months: int = Field(0, ge=0, description="time to obtain a licence")
    confidence: Literal["high", "medium", "low", "inferred"] = "medium"
    editorial: bool = False
    note: str = ""

    @model_validator(mode="after")
    def _dates(self) -> ExportRule:
        if self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self

    def in_force(self, on: dt.date) -> bool:
        return self.since <= on and (self.until is None or on < self.until)


class Screening(Entity):
    """Investment screening of datacentre projects in one country, by investor class."""

    country: str = Field(min_length=2, max_length=2)
    delay_weeks_typical: NonNegativeFloat
    delay_weeks_worst: NonNegativeFloat
    risk_by_investor: dict[str, Literal["low", "medium", "high", "very_high"]] = Field(default_factory=dict)
    denied: bool = Field(False, description="the project is refused (shock overlay)")


class Budget(Record):
    """Capital budget: a total over the horizon and optional caps per period (US$)."""

    total_usd: NonNegativeFloat
    per_period_usd: dict[int, NonNegativeFloat] = Field(default_factory=dict)


class Policies(Record):
    """All policy inputs of a scenario."""

    groups: dict[str, list[str]] = Field(default_factory=dict)
    residency: list[ResidencyRule] = Field(default_factory=list)
    default_allowed: list[str] = Field(
        default_factory=lambda: ["*"], description="where data with no residency rule may go"
    )
    export: list[ExportRule] = Field(default_factory=list)
    screening: list[Screening] = Field(default_factory=list)
    investor_class: str = Field(
        "other_non_EU", description="the operator's class in screening risk tables (e.g. CN_RU_linked)"
    )
    renewable_target: dict[int, float] = Field(
        default_factory=dict, description="period -> minimum renewable share of energy"
    )
    budget: Budget
