"""Reading scenarios: bundled names or YAML files, ``extends`` overlays, every problem at once.

``load_scenario("global-2025")`` returns the bundled default scenario; ``load_scenario(path)``
reads a YAML file, which may start with ``extends: global-2025`` (or a path to another file,
relative to it) and then override any part of the base (see :func:`sovcloud.scenario.yamlio.merge`).
Problems are collected from YAML parsing, field validation and cross-reference checks, and
raised together as one :class:`~sovcloud.errors.ScenarioError`. When the scenario lists no
demand zones they are generated from GeoNames (:mod:`sovcloud.scenario.zones`).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from sovcloud.errors import Problem, ScenarioError, ScenarioNotFound
from sovcloud.scenario.diagnostics import cross_check, from_validation_error
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.yamlio import Doc, merge, read_yaml
from sovcloud.scenario.zones import generate_zones
from sovcloud.vocab import DEFAULT_SCENARIO

__all__ = ["DEFAULT_SCENARIO", "Scenario", "bundled_scenarios", "load_scenario", "read_document", "validate_document"]


def _data_dir() -> Path:
    return Path(str(resources.files("sovcloud") / "data"))


def bundled_scenarios() -> list[str]:
    """Names of the scenarios shipped inside the package."""
    return sorted(p.name for p in _data_dir().iterdir() if p.is_dir() and (p / "scenario.yaml").exists())


def _read_file(path: Path, label: str) -> Doc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ScenarioNotFound(
            f"{label}: no such file; give a YAML path or a bundled scenario ({', '.join(bundled_scenarios())})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError([Problem(label, None, "(file)", "", f"not UTF-8 text ({exc.reason})",
                                     "save the file as UTF-8")]) from exc
    except OSError as exc:
        raise ScenarioNotFound(f"{label}: cannot read ({exc.strerror})") from exc
    doc, problems = read_yaml(text, label)
    if doc is None:
        raise ScenarioError(problems)
    return doc


def read_document(source: str | Path, _chain: tuple[str, ...] = ()) -> Doc:
    """The merged raw document for a bundled name or a file, with ``extends`` resolved."""
    name = str(source)
    if name in _chain:
        raise ScenarioError([Problem(name, None, "extends", name, "extends cycle: " + " -> ".join(_chain + (name,)),
                                     "make the chain of extends end at a bundled scenario")])
    if isinstance(source, str) and source in bundled_scenarios():
        folder = _data_dir() / source
        doc = Doc({})
        for f in ["scenario.yaml"] + sorted(p.name for p in folder.glob("*.yaml") if p.name != "scenario.yaml"):
            doc = merge(doc, _read_file(folder / f, f"{source}/{f}"))
        return doc
    path = Path(source)
    if not path.exists() and isinstance(source, str) and "/" not in source and not source.endswith((".yaml", ".yml")):
        raise ScenarioNotFound(f"unknown scenario '{source}'; bundled: {', '.join(bundled_scenarios())}, "
                               "or give a path to a YAML file")
    doc = _read_file(path, str(path))
    base = doc.data.get("extends") if isinstance(doc.data, dict) else None
    if base is None:
        return doc
    if not isinstance(base, str):
        raise ScenarioError([Problem(str(path), doc.locate(("extends",))[1], "extends", repr(base),
                                     "extends must be a scenario name or a file path", "write extends: global-2025")])
    target: str | Path = base if base in bundled_scenarios() else (path.parent / base)
    try:
        parent = read_document(target, _chain + (name,))
    except ScenarioNotFound as exc:
        hint = f"use a bundled scenario ({', '.join(bundled_scenarios())}) or a file path"
        problem = Problem(str(path), doc.locate(("extends",))[1], "extends", repr(base), str(exc), hint)
        raise ScenarioError([problem]) from exc
    return merge(parent, doc)


def validate_document(doc: Doc) -> Scenario:
    """Validate a merged document into a Scenario (every problem at once); generate zones if none."""
    problems: list[Problem] = []
    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(from_validation_error(exc, doc, Scenario))
    problems.extend(cross_check(doc))
    if problems or scenario is None:
        raise ScenarioError(problems)
    if not scenario.demand.zones:
        zones = generate_zones(scenario.demand.generate)
        scenario = scenario.model_copy(update={"demand": scenario.demand.model_copy(update={"zones": zones})})
    return scenario


@lru_cache(maxsize=4)
def _load_bundled(name: str) -> Scenario:
    return validate_document(read_document(name))


def load_scenario(source: str | Path = DEFAULT_SCENARIO) -> Scenario:
    """Load and validate a scenario; raises :class:`ScenarioError` listing every problem."""
    if isinstance(source, str) and source in bundled_scenarios():
        return _load_bundled(source)
    return validate_document(read_document(source))
