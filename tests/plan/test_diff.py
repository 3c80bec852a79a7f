"""``sovcloud diff``: two plans side by side (a shocked plan against its base)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sovcloud.cli import app
from sovcloud.plan.diff import diff_plans

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()


def test_a_denied_site_shows_as_closed_with_its_chips_and_the_rest_unchanged(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out, extra in ((a, []), (b, ["--shock", "deny-site:fr-par"])):
        r = runner.invoke(app, ["plan", str(DATA / "tiny_a.yaml"), "--out", str(out), "--no-report",
                                "--no-compare-greedy", *extra])
        assert r.exit_code == 0, r.output
    d = diff_plans(a, b)
    assert d.closed == ["fr-par"] and d.opened == []
    fr = d.chips[d.chips["site"] == "fr-par"]
    assert len(fr) and (fr["b"] == 0).all() and (fr["change"] < 0).all()
    assert d.objective_musd[1] >= d.objective_musd[0]  # a site fewer can only cost more
    same = diff_plans(a, a)
    assert same.closed == [] and same.opened == [] and same.chips.empty and not same.why_a and not same.why_b
    out = tmp_path / "d.json"
    r = runner.invoke(app, ["diff", str(a), str(b), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "only in A fr-par" in r.output.replace("\n", " ") and json.loads(out.read_text())["closed"] == ["fr-par"]


def test_a_missing_plan_is_one_line_naming_it(tmp_path: Path) -> None:
    r = runner.invoke(app, ["diff", str(tmp_path / "nope"), str(tmp_path / "nope2")])
    assert r.exit_code != 0 and "no such plan file" in r.output and "Traceback" not in r.output
