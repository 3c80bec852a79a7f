from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sovcloud.cli import app

runner = CliRunner()


def test_show_default_scenario() -> None:
    result = runner.invoke(app, ["show"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "30 active regions with 102 availability zones" in out
    assert "headline: 29 regions / 91 zones" in out
    for needle in ("sa-brazil-sao-paulo", "eu-netherlands", "eu-west-2", "thead-ppu-zhenwu-810e",
                   "qwen3-omni-30b-a3b", "of world population"):
        assert needle in out
    share = float(out.split("% of world population")[0].rsplit("= ", 1)[1])
    assert share >= 95.0


def test_validate_ok(write) -> None:  # type: ignore[no-untyped-def]
    path = write("extends: global-2025\nname: ok\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0 and "ok:" in result.output


def test_validate_reports_each_problem_and_exits_2(write) -> None:  # type: ignore[no-untyped-def]
    path = write(
        "extends: global-2025\n"
        "sites:\n"
        "  - id: eu-central-1\n"
        "    installed_chips: {h100: 8}\n"
        "    pue: -1\n"
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "unknown chip 'h100'" in result.output and "pue" in result.output
    assert "2 problems in scenario" in result.output
    assert "Traceback" not in result.output


def test_validate_console_script_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: global-2025\nsites: [\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "sovcloud.cli", "validate", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "YAML syntax" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_scenario_is_one_line() -> None:
    result = runner.invoke(app, ["show", "nope"])
    assert result.exit_code == 2
    assert "unknown scenario 'nope'" in result.output


def test_schema_is_json_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = runner.invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0
    doc = json.loads(out.read_text())
    assert "sites" in doc["properties"] and "required" in doc
    overlay = runner.invoke(app, ["schema", "--overlay"])
    assert '"required"' not in overlay.output


DATA = Path(__file__).parents[1] / "data"


@pytest.mark.slow
def test_plan_writes_versioned_plan_and_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["plan", str(DATA / "tiny_a.yaml"), "--out", str(out), "--time-limit", "20"])
    assert result.exit_code == 0, result.output
    assert "residency violations 0" in result.output and "greedy baseline" in result.output
    doc = json.loads((out / "plan.json").read_text())
    assert doc["schema"] == "sovcloud.plan/1"
    assert len(doc["scenario"]["sha256"]) == 64
    assert doc["solver"]["gap"] is not None and doc["solver"]["bound_musd"] <= doc["solver"]["objective_musd"] + 1e-6
    assert doc["checks"]["residency_violations"] == 0 and doc["checks"]["budget_ok"]
    for name in ("sites", "fleet", "flows", "unserved", "costs"):
        assert (out / f"{name}.parquet").exists()


def test_plan_with_shock_and_bad_options(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["plan", str(DATA / "tiny_a.yaml"), "--out", str(tmp_path), "--solver", "greedy",
                             "--shock", "surge:FR:2"])
    assert ok.exit_code == 0, ok.output
    assert "surge:FR:2" in json.loads((tmp_path / "plan.json").read_text())["scenario"]["shocks"]
    bad = runner.invoke(app, ["plan", str(DATA / "tiny_a.yaml"), "--solver", "cplex"])
    assert bad.exit_code == 2 and "use milp or greedy" in bad.output
    bad_shock = runner.invoke(app, ["plan", str(DATA / "tiny_a.yaml"), "--shock", "power-cut:eu-central-1:half"])
    assert bad_shock.exit_code == 2 and "fix:" in bad_shock.output


#: Modules the command line must not load to start, nor the planning path to run: optional extras
#: (the PostgreSQL driver, the browser driver) and the gateway's server stack.
OPTIONAL = ("psycopg", "playwright", "uvicorn", "starlette", "aiohttp", "httptools", "uvloop", "prometheus_client")
HEAVY = ("numpy", "pandas", "xarray", "linopy", "highspy", "scipy", "pydantic", "sqlalchemy", "plotly", "numba")

_BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["sovcloud", *{argv!r}]
from sovcloud.cli import main
main()
"""


def _run_blocked(argv: list[str], blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    code = _BLOCK.format(blocked=set(blocked), argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)


def test_the_command_line_starts_without_loading_the_library() -> None:
    code = "import json, sys, sovcloud.cli; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(proc.stdout))
    assert loaded.isdisjoint(OPTIONAL + HEAVY), sorted(loaded & set(OPTIONAL + HEAVY))


@pytest.mark.slow
def test_help_and_plan_run_without_the_optional_extras(tmp_path: Path) -> None:
    helped = _run_blocked(["--help"], OPTIONAL + HEAVY)
    assert helped.returncode == 0, helped.stderr
    assert "plan" in helped.stdout and "serve" in helped.stdout
    out = tmp_path / "out"
    planned = _run_blocked(["plan", str(DATA / "tiny_a.yaml"), "--out", str(out), "--time-limit", "20"], OPTIONAL)
    assert planned.returncode == 0, planned.stderr
    assert json.loads((out / "plan.json").read_text())["scenario"]
    assert (out / "report.html").exists()


def test_a_command_needing_a_missing_extra_names_it(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:5432/test"
    proc = _run_blocked(["tenants", "show", "--ledger", url], ("psycopg",))
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'sovcloud[postgres]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_check_replays_the_plan_and_verify_names_a_missing_plan(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["plan", str(DATA / "tiny_served.yaml"), "--out", str(out), "--check",
                                 "--check-sample", "0.02", "--no-compare-greedy"])
    assert result.exit_code == 0, result.output
    assert "plan vs its simulation" in result.output and "workload chat" in result.output
    check = json.loads((out / "check" / "check.json").read_text())
    assert check["ok"] and {r["name"] for r in check["rows"] if r["scope"] == "workload"} == {"chat", "batch"}
    assert all(r["attainment"] >= 0.95 for r in check["rows"])
    assert (out / "check" / "summary.json").exists() and "sim-versus-table" in (out / "report.html").read_text()
    missing = runner.invoke(app, ["verify", "--plan", str(tmp_path / "nope" / "plan.json")])
    assert missing.exit_code != 0 and "no such plan file" in missing.output and "Traceback" not in missing.output
