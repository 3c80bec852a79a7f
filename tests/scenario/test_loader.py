from __future__ import annotations

from pathlib import Path

import pytest

from sovcloud.errors import ScenarioError, ScenarioNotFound
from sovcloud.scenario.loader import bundled_scenarios, load_scenario
from sovcloud.scenario.model import Scenario

CHIPS = [
    "h100-sxm", "h200-sxm", "b200", "h20", "a100-80gb-sxm", "l20", "mi300x", "ascend-910b", "ascend-910c",
    "thead-ppu-zhenwu-810e", "hanguang-800",
]
MODELS = [
    "qwen3-omni-30b-a3b", "qwen3-235b-a22b", "qwen3-30b-a3b", "qwen3-32b", "qwen3-8b", "deepseek-v3",
    "deepseek-r1", "llama-3.1-70b", "llama-3.3-70b", "llama-3.1-405b", "llama-2-70b", "mixtral-8x7b",
]


def test_default_scenario_catalog_ids(scenario: Scenario) -> None:
    assert "global-2025" in bundled_scenarios()
    assert [c.id for c in scenario.accelerators] == CHIPS
    assert sorted(m.id for m in scenario.models) == sorted(MODELS)


def test_default_scenario_footprint_and_announcements(scenario: Scenario) -> None:
    active = [s for s in scenario.sites if s.kind == "existing" and s.is_active]
    assert len(active) == 30
    assert scenario.headline is not None and scenario.headline.regions == 29
    candidates = {s.country for s in scenario.sites if s.kind == "candidate"}
    assert {"BR", "NL"} <= candidates
    assert scenario.site("eu-west-2").available_from == 2026  # Paris, announced 2025-09
    assert any(o.kind == "lease" for s in scenario.sites for o in s.options)


def test_every_number_has_provenance(scenario: Scenario) -> None:
    for entity in [*scenario.sites, *scenario.accelerators, *scenario.models]:
        assert entity.sources or entity.assumptions, entity.id
    ppu = scenario.chip("thead-ppu-zhenwu-810e")
    assert "tflops" in ppu.assumptions and "NOT DISCLOSED" in ppu.assumptions["tflops"]


def test_kv_bytes_match_model_cards(scenario: Scenario) -> None:
    assert scenario.model("llama-3.1-70b").kv_bytes_per_token() == 327680
    assert scenario.model("qwen3-235b-a22b").kv_bytes_per_token() == 192512
    assert scenario.model("deepseek-v3").kv_bytes_per_token() == 70272
    assert scenario.model("qwen3-30b-a3b").kv_bytes_per_token() == 98304


def test_extends_overrides_by_id_adds_and_removes(write) -> None:  # type: ignore[no-untyped-def]
    path = write(
        "extends: global-2025\n"
        "name: my-plan\n"
        "sites:\n"
        "  - id: eu-central-1\n"
        "    pue: 1.1\n"
        "  - id: cn-fuzhou\n"
        "    remove: true\n"
        "policies:\n"
        "  budget:\n"
        "    total_usd: 1.0e9\n"
    )
    sc = load_scenario(path)
    base = load_scenario()
    assert sc.name == "my-plan"
    assert sc.site("eu-central-1").pue == 1.1
    assert sc.site("eu-central-1").carbon_g_per_kwh == base.site("eu-central-1").carbon_g_per_kwh
    assert "cn-fuzhou" not in [s.id for s in sc.sites]
    assert len(sc.sites) == len(base.sites) - 1
    assert sc.policies.budget.total_usd == 1.0e9
    assert sc.policies.budget.per_period_usd == base.policies.budget.per_period_usd


def test_demand_assumptions_are_overridable(write) -> None:  # type: ignore[no-untyped-def]
    path = write("extends: global-2025\ndemand:\n  adoption_by_country: {DE: 0.5}\n")
    sc = load_scenario(path)
    assert sc.demand.adoption_by_country["DE"] == 0.5
    assert sc.demand.adoption_by_country["CN"] == load_scenario().demand.adoption_by_country["CN"]


def test_unknown_scenario_name() -> None:
    with pytest.raises(ScenarioNotFound, match="bundled: global-2025"):
        load_scenario("global-2099")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioNotFound, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")


def test_extends_cycle(write) -> None:  # type: ignore[no-untyped-def]
    write("extends: b.yaml\n", "a.yaml")
    b = write("extends: a.yaml\n", "b.yaml")
    with pytest.raises(ScenarioError, match="extends cycle"):
        load_scenario(b)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"extends: global-2025\nname: \xff\xfe\n")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(path)
