"""Timed shocks: parsing, targets, and what is active when; plus the `sovcloud simulate` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sovcloud.cli import app
from sovcloud.errors import UsageError
from sovcloud.routing.backends import backends_for, load_plan
from sovcloud.scenario.loader import load_scenario
from sovcloud.sim.shocks import ShockTimeline, parse_sim_shock
from sovcloud.world.compiled import compile as compile_world

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()


@pytest.mark.parametrize(("text", "kind", "target", "factor", "start", "end"), [
    ("outage:eu-west-1@6h", "outage", "eu-west-1", 1.0, 6 * 3600.0, math.inf),
    ("outage:eu-west-1@6h-12h", "outage", "eu-west-1", 1.0, 6 * 3600.0, 12 * 3600.0),
    ("power-cut:eu-central-1:0.5@90m", "power-cut", "eu-central-1", 0.5, 5400.0, math.inf),
    ("surge:DE:1.5@2-4", "surge", "DE", 1.5, 7200.0, 14400.0),
    ("embargo:vendor:NVIDIA@30s", "embargo", "vendor:NVIDIA", 1.0, 30.0, math.inf),
    ("deny-site:eu-netherlands", "deny-site", "eu-netherlands", 1.0, 0.0, math.inf),
])
def test_parse(text: str, kind: str, target: str, factor: float, start: float, end: float) -> None:
    s = parse_sim_shock(text)
    assert (s.kind, s.target, s.factor, s.start_s, s.end_s, s.text) == (kind, target, factor, start, end, text)


@pytest.mark.parametrize(("text", "needle"), [
    ("outage:eu-west-1@2027-01-01", "not a number of hours"),
    ("outage:eu-west-1@6h-2h", "ends before it starts"),
    ("power-cut:eu-west-1:1.5", "in (0, 1]"),
    ("flood:eu-west-1", "fix:"),
    ("surge:DE:lots", "fix:"),
])
def test_parse_errors_say_how_to_fix(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match="fix:") as err:
        parse_sim_shock(text)
    assert needle in str(err.value)


def test_timeline_targets_and_windows(plan_dir: Path) -> None:
    doc = load_plan(plan_dir)
    world = compile_world(load_scenario(doc.scenario.source))
    b = backends_for(doc, world)
    shocks = [parse_sim_shock(s) for s in ("outage:de-fra@1h-2h", "power-cut:fr-par:0.5@0.5h", "surge:FR:2@1h",
                                           "embargo:origin:CN@3h")]
    tl = ShockTimeline.build(shocks, world, b)
    assert tl.change_times(4 * 3600.0) == [1800.0, 3600.0, 7200.0, 10800.0]
    fra = np.array([i.startswith("de-fra/") for i in b.ids])
    par = np.array([i.startswith("fr-par/") for i in b.ids])
    healthy, power = tl.backends_at(5400.0)
    assert not healthy[fra].any() and healthy[~fra].all()
    assert np.all(power[par] == 0.5) and np.all(power[~par] == 1.0)
    assert tl.backends_at(7200.0)[0][fra].all()  # back after the window
    surge = tl.surge(np.array([0.0, 3600.0]), len(world.zones))
    fr = world.zones.index("z-fr")
    assert surge[fr].tolist() == [1.0, 2.0] and surge[world.zones.index("z-de")].tolist() == [1.0, 1.0]
    for bad in ("outage:mars-1", "surge:XX:2", "embargo:vendor:Nobody"):
        with pytest.raises(UsageError, match="fix:"):
            ShockTimeline.build([parse_sim_shock(bad)], world, b)


def test_cli_simulate_writes_outputs(plan_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = runner.invoke(app, ["simulate", "--plan", str(plan_dir / "plan.json"), "--hours", "0.1", "--sample",
                                 "0.005", "--shock", "outage:fr-par@0.05h", "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "residency violations 0" in result.output and "SLO attainment" in result.output
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 4 and s["shocks"] == ["outage:fr-par@0.05h"] and s["sample"] == 0.005
    for name in ("timeline", "by_zone", "by_site", "by_workload"):
        assert (out / f"{name}.parquet").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--trace", "nowhere.csv"], "no such trace file"),
    (["--shock", "outage:mars-1"], "unknown site 'mars-1'"),
    (["--sample", "2"], "--sample 2.0: out of range"),
    (["--trace", "azure-conv", "--synthetic"], "exclude each other"),
])
def test_cli_bad_input_is_one_line_and_exit_2(plan_dir: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["simulate", "--plan", str(plan_dir), "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_cli_missing_plan(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--plan", str(tmp_path / "none.json")])
    assert result.exit_code == 2 and "no such plan file" in result.output
