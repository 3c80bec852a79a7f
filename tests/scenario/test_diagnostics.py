"""Broken scenarios: every problem is reported at once with file, line, field, value and a fix."""

from __future__ import annotations

import pytest

from sovcloud.errors import ScenarioError
from sovcloud.scenario.loader import load_scenario


def problems(path) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return [p.render() for p in info.value.problems]


def test_negative_power_cap(write) -> None:  # type: ignore[no-untyped-def]
    path = write(
        "extends: global-2025\n"
        "sites:\n"
        "  - id: eu-central-1\n"
        "    options:\n"
        "      - id: expand\n"
        "        power_cap_mw: {2026: -5}\n"
    )
    [line] = problems(path)
    assert f"{path}:6" in line
    assert "sites[eu-central-1].options[expand].power_cap_mw.2026" in line
    assert "-5" in line and ">= 0" in line


def test_unknown_chip_at_site(write) -> None:  # type: ignore[no-untyped-def]
    path = write("extends: global-2025\nsites:\n  - id: cn-hangzhou\n    installed_chips: {h100-sxn: 8}\n")
    [line] = problems(path)
    assert "unknown chip 'h100-sxn'" in line and "did you mean 'h100-sxm'" in line
    assert f"{path}:4" in line


def test_duplicate_site_id(write) -> None:  # type: ignore[no-untyped-def]
    site = (
        "  - {id: xx-new, name: New, city: Oslo, country: 'NO', lat: 59.9, lon: 10.7, kind: candidate,\n"
        "     status: candidate, pue: 1.1, wue_l_per_kwh: 0.2, carbon_g_per_kwh: 30,\n"
        "     electricity_usd_per_kwh: 0.05,\n"
        "     options: [{id: build, kind: build, lead_time_months: 12, power_cap_mw: {2027: 10}}]}\n"
    )
    path = write("name: dup\nsites:\n" + site + site)
    lines = problems(path)
    dup = [x for x in lines if "duplicate id" in x]
    assert len(dup) == 1 and "sites[xx-new].id" in dup[0] and f"{path}:7" in dup[0]


def test_residency_rule_unknown_jurisdiction(write) -> None:  # type: ignore[no-untyped-def]
    path = write(
        "extends: global-2025\npolicies:\n  residency:\n"
        "    - {id: eu-gdpr, origin: [EEA], allowed: [EEA, EU_ADEQUATE, MARS]}\n"
    )
    [line] = problems(path)
    assert "unknown jurisdiction 'MARS'" in line and "policies.residency[eu-gdpr].allowed" in line
    assert f"{path}:4" in line


def test_yaml_syntax_error(write) -> None:  # type: ignore[no-untyped-def]
    path = write("extends: global-2025\nsites:\n  - id: x\n   pue: [1.2\n")
    [line] = problems(path)
    assert "(YAML syntax)" in line and str(path) in line and "fix:" in line


def test_wrong_unit_type(write) -> None:  # type: ignore[no-untyped-def]
    path = write("extends: global-2025\nsites:\n  - id: eu-west-1\n    electricity_usd_per_kwh: 0.31 USD\n")
    [line] = problems(path)
    assert "sites[eu-west-1].electricity_usd_per_kwh" in line and "'0.31 USD'" in line
    assert "without units" in line and f"{path}:4" in line


def test_every_problem_at_once(write) -> None:  # type: ignore[no-untyped-def]
    path = write(
        "extends: global-2025\n"
        "horizon: {periods: [2025, 2026, 2027], discount_rate: 0.08}\n"
        "sites:\n"
        "  - id: eu-central-1\n"
        "    pue: 0.9\n"
        "    installed_chips: {tpu-v5: 4}\n"
        "  - id: eu-west-1\n"
        "    installed_power_mw: {2031: 5}\n"
        "accelerators:\n"
        "  - id: h20\n"
        "    memory_gb: lots\n"
        "policies:\n"
        "  export:\n"
        "    - {id: shock, chips: ['vendor:NVIDIA'], site_country: [ATLANTIS], since: 2026-01-01, status: banned}\n"
    )
    lines = problems(path)
    text = "\n".join(lines)
    assert len(lines) == 5, text
    for needle in ("pue", "tpu-v5", "period 2031", "memory_gb", "ATLANTIS"):
        assert needle in text


def test_unknown_field_suggests_spelling(write) -> None:  # type: ignore[no-untyped-def]
    path = write("extends: global-2025\nsites:\n  - id: eu-west-1\n    pue_ratio: 1.2\n")
    [line] = problems(path)
    assert "unknown field" in line and "did you mean 'pue'" in line


def test_bare_no_is_explained(write) -> None:  # type: ignore[no-untyped-def]
    path = write("extends: global-2025\npolicies:\n  groups:\n    NORDIC: [SE, NO, DK]\n")
    text = "\n".join(problems(path))
    assert "quote it" in text
