"""Shocks: scenario overlays for what the news is about, used by the planner and the simulator.

A shock is a small, typed change applied to a scenario before it is compiled
(:func:`sovcloud.world.shocks.apply_shocks`):

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
from typing import Literal

from pydantic import Field, PositiveFloat, ValidationError

from sovcloud.errors import Problem, ScenarioError
from sovcloud.scenario.entity import Record

__all__ = ["Shock", "parse_shock"]


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
