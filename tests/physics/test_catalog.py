"""The physics never loads a scenario: ids are resolved by callers through a catalog."""

from __future__ import annotations

import ast
from pathlib import Path

import sovcloud.physics
from sovcloud.physics.catalog import Catalog
from tests.physics.catalog import SC


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_physics_module_imports_the_scenario_loader() -> None:
    package = Path(sovcloud.physics.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        loaders = {m for m in _imported_modules(path) if m.startswith("sovcloud.scenario.loader")}
        assert not loaders, f"{path.name} imports {sorted(loaders)}"


def test_the_bundled_scenario_is_a_catalog() -> None:
    catalog: Catalog = SC
    assert [m.id for m in catalog.models][:1] and [c.id for c in catalog.accelerators][:1]
    first = catalog.models[0]
    assert catalog.model(first.id) is first
    chip = catalog.accelerators[-1]
    assert catalog.chip(chip.id) is chip
