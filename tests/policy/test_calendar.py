"""Lead times count in calendar months from the decision date (January 1 of the first period)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from sovcloud.policy.masks import add_months, decision_date
from sovcloud.scenario.model import Scenario
from sovcloud.world.compiled import World


def test_add_months_is_calendar_arithmetic() -> None:
    assert add_months(dt.date(2025, 1, 1), 18) == dt.date(2026, 7, 1)
    assert add_months(dt.date(2025, 1, 31), 1) == dt.date(2025, 2, 28)
    assert add_months(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)
    assert add_months(dt.date(2025, 12, 15), 1) == dt.date(2026, 1, 15)


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2090, 12, 31)), st.integers(0, 240))
def test_months_add_up_and_keep_the_day_where_it_exists(d: dt.date, n: int) -> None:
    out = add_months(d, n)
    assert (out.year - d.year) * 12 + out.month - d.month == n
    assert out.day == d.day or (out.day < d.day and (out + dt.timedelta(days=1)).day == 1)


def test_an_18_month_site_decided_in_january_2025_serves_from_the_july_2026_policy_date(scenario: Scenario,
                                                                                        world: World) -> None:
    assert decision_date(scenario) == dt.date(2025, 1, 1)
    site = next(s for s in scenario.sites if s.id == "sa-brazil-sao-paulo")
    assert min(o.lead_time_months for o in site.options) == 18 and scenario.horizon.policy_date == "07-01"
    # 30.44-day months put it one day after the 2026 policy date; calendar months put it on it
    assert world.ds.site_available.sel(site="sa-brazil-sao-paulo").values.tolist() == [False, True, True]
