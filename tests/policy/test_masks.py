from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sovcloud.policy.masks import EXPORT_CODES, expand, export_masks, residency_mask
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.rules import ResidencyRule
from sovcloud.world.compiled import World


def test_expand_groups_recursively(scenario: Scenario) -> None:
    eea = expand(scenario.policies.groups, ["EEA"])
    assert eea is not None and {"DE", "FR", "NL", "NO", "IS"} <= eea and "GB" not in eea
    assert expand(scenario.policies.groups, ["*"]) is None


def test_eu_data_stays_in_eu_or_adequate(world: World) -> None:
    ds = world.ds
    allowed = set(ds.site_country.values[ds.residency.sel(zone="de").values])
    assert allowed <= {"DE", "FR", "NL", "GB", "JP", "KR"}
    assert {"DE", "FR", "NL", "GB"} <= allowed
    assert "US" not in allowed and "CN" not in allowed


def test_china_data_stays_in_mainland(world: World) -> None:
    ds = world.ds
    for zone in ("cn", "cn-shanghai"):
        assert set(ds.site_country.values[ds.residency.sel(zone=zone).values]) == {"CN"}


def test_russia_has_no_compliant_site(world: World) -> None:
    assert not world.ds.residency.sel(zone="ru").any()


def test_export_controls_for_cn_operator(world: World) -> None:
    st_ = world.ds.export_status
    banned, allowed = EXPORT_CODES["banned"], EXPORT_CODES["allowed"]
    assert (st_.sel(chip="h100-sxm") == banned).all()  # D:5-HQ rule applies anywhere
    assert int(st_.sel(chip="h20", site="cn-hangzhou", period=2024 + 1)) == banned  # licence required 2025-04
    assert int(st_.sel(chip="ascend-910b", site="cn-beijing", period=2026)) == allowed
    assert int(st_.sel(chip="ascend-910b", site="eu-central-1", period=2026)) == banned  # GP10 guidance
    assert (st_.sel(chip="thead-ppu-zhenwu-810e") == allowed).all()
    h200 = st_.sel(chip="h200-sxm", site="cn-hangzhou")
    assert [int(x) for x in h200.values] == [banned, EXPORT_CODES["licensed"], EXPORT_CODES["licensed"]]


def test_appended_embargo_overrides_earlier_rules(scenario: Scenario) -> None:
    from sovcloud.scenario.rules import ExportRule

    embargo = ExportRule(id="shock", chips=["vendor:Alibaba T-Head"], since="2026-01-01", status="banned")
    sc = scenario.model_copy(update={"policies": scenario.policies.model_copy(
        update={"export": [*scenario.policies.export, embargo]})})
    masks = export_masks(sc)
    j = [c.id for c in sc.accelerators].index("thead-ppu-zhenwu-810e")
    assert masks.allowed[j, :, 0].all() and not masks.allowed[j, :, 1:].any()


JURIS = ["DE", "FR", "CN", "US", "JP", "SG", "BR", "GB", "EU", "*"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(JURIS), min_size=1, max_size=3),
                          st.lists(st.sampled_from(JURIS), min_size=1, max_size=3)), max_size=4))
def test_no_allowed_pair_crosses_residency(scenario: Scenario, rules: list[tuple[list[str], list[str]]]) -> None:
    """Property: a zone-site pair is allowed only if every rule governing the zone allows the site."""
    residency = [ResidencyRule(id=f"r{i}", origin=o, allowed=a) for i, (o, a) in enumerate(rules)]
    sc = scenario.model_copy(update={"policies": scenario.policies.model_copy(update={"residency": residency})})
    mask, _ = residency_mask(sc)
    groups = sc.policies.groups
    site_country = [s.country for s in sc.sites]
    for i, zone in enumerate(sc.demand.zones[::7]):
        row = mask[i * 7]
        for rule in residency:
            origin = expand(groups, rule.origin)
            allowed = expand(groups, rule.allowed)
            if (origin is None or zone.origin in origin) and allowed is not None:
                assert not any(row[k] and site_country[k] not in allowed for k in range(len(site_country)))
    assert mask.dtype == np.bool_
