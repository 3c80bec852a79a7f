"""The import contracts in pyproject.toml hold, and a forbidden import breaks them."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: The console script next to this interpreter (a venv), else the one on PATH (a system-wide install).
LINT = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                        os.environ.get("PATH", "")])) or "lint-imports"


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


@pytest.mark.slow
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


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80
#: A module may run longer when its first lines say why, in a comment that starts with this.
LENGTH_REASON = "# Length:"


def _package_files() -> list[Path]:
    return sorted((ROOT / "src" / "sovcloud").rglob("*.py"))


def test_no_module_over_500_lines_and_no_function_over_80_without_a_reason() -> None:
    too_long: list[str] = []
    for path in _package_files():
        text = path.read_text(encoding="utf-8")
        if LENGTH_REASON in "\n".join(text.splitlines()[:30]):
            continue
        name = str(path.relative_to(ROOT))
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "split these, or give the reason at the top of the module:\n" + "\n".join(too_long)


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for init in sorted((ROOT / "src" / "sovcloud").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{init.relative_to(ROOT)}: the docstring must say what the package may import"


def test_exceptions_are_defined_only_in_the_error_tree() -> None:
    outside = []
    for path in _package_files():
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id == "SovcloudError")
                for b in node.bases
            ):
                outside.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not outside, "define exceptions in sovcloud/errors.py:\n" + "\n".join(outside)
