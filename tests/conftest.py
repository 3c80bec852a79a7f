from __future__ import annotations

from pathlib import Path

import pytest

from sovcloud.plan.io import write_plan
from sovcloud.plan.make import make_plan
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.model import Scenario
from sovcloud.world.compiled import World, compile


@pytest.fixture(scope="session")
def scenario() -> Scenario:
    return load_scenario()


@pytest.fixture(scope="session")
def world(scenario: Scenario) -> World:
    return compile(scenario)


def _solved(tmp: pytest.TempPathFactory, name: str) -> Path:
    """tests/data/<name>.yaml solved and written by ``write_plan`` into a fresh folder."""
    src = str(Path(__file__).parent / "data" / f"{name}.yaml")
    out = tmp.mktemp(name.replace("_", ""))
    write_plan(make_plan(load_scenario(src)), out, source=src)
    return out


@pytest.fixture(scope="session")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A solved plan of tests/data/tiny_a.yaml written by ``write_plan`` (read-only for the tests)."""
    return _solved(tmp_path_factory, "tiny_a")


@pytest.fixture(scope="session")
def served_plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A solved plan of tests/data/tiny_served.yaml (tiny_a with the default serving headroom), read-only."""
    return _solved(tmp_path_factory, "tiny_served")


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a scenario overlay file and return its path."""

    def _write(text: str, name: str = "s.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write
