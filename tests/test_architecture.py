"""The import contracts in pyproject.toml hold, and a forbidden import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([LINT, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, check=False, timeout=300)


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "sovcloud", tmp_path / "src" / "sovcloud",
                    ignore=shutil.ignore_patterns("__pycache__", "data", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_import_contracts() -> None:
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("plan/make.py", "import sovcloud.metering.ledger", "never import the live stack"),
    ("sim/run.py", "import sovcloud.gateway.app", "Stages are layered"),
    ("scenario/loader.py", "import sovcloud.world.compiled", "Stages are layered"),
    ("report/write.py", "import psycopg", "never import the live stack"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    root = _copy(tmp_path)
    target = root / "src" / "sovcloud" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # added by the test\n", encoding="utf-8")
    proc = _lint(root)
    assert proc.returncode != 0, proc.stdout
    broken = [block for block in proc.stdout.split("\n\n") if "BROKEN" in block]
    assert any(contract in block for block in broken), proc.stdout
    assert module.replace("/", ".").removesuffix(".py") in proc.stdout
