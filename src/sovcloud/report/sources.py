"""Assumptions and sources of a scenario, as table rows with links.

Every :class:`~sovcloud.scenario.entity.Entity` in a scenario carries ``sources`` (field -> citation) and
``assumptions`` (field -> why the value was assumed). The rows group identical citations of the
same field across records of one type (e.g. 290 demand zones citing GeoNames become one row), and
split each citation into text and URLs so the template can link them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from sovcloud.scenario.entity import Entity
from sovcloud.scenario.model import Scenario

__all__ = ["SourceRow", "citation_parts", "source_rows"]

_URL = re.compile(r"https?://[^\s)\]>,;\"']+")
_SHOW_IDS = 6


@dataclass(frozen=True)
class SourceRow:
    """One field of one or more records of a type, with its citation (or assumption) and values."""

    kind: str  # "source" or "assumption"
    entity: str  # record type, e.g. "Site"
    ids: tuple[str, ...]
    field: str
    value: str
    parts: tuple[tuple[str, bool], ...]  # (text, is_url)

    @property
    def ids_text(self) -> str:
        shown = ", ".join(self.ids[:_SHOW_IDS])
        more = len(self.ids) - _SHOW_IDS
        return shown + (f" and {more} more" if more > 0 else "")

    @property
    def has_link(self) -> bool:
        return any(is_url for _, is_url in self.parts)


def citation_parts(text: str) -> tuple[tuple[str, bool], ...]:
    """Split a citation into plain text and URLs (``(text, True)`` for a URL)."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".")
        if m.start() > pos:
            parts.append((text[pos:m.start()], False))
        parts.append((url, True))
        pos = m.start() + len(url)
    if pos < len(text):
        parts.append((text[pos:], False))
    return tuple(parts)


def _value(entity: Entity, name: str) -> str:
    if name == "*":
        return "(whole record)"
    base = re.split(r"[.\[]", name, maxsplit=1)[0]
    value: Any = getattr(entity, base, None)
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True)
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = f"{len(value)} item(s)"
    text = f"{value:,.6g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 90 else text[:87] + "..."


def _entities(node: Any) -> list[Entity]:
    found: list[Entity] = []
    if isinstance(node, Entity):
        found.append(node)
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            found.extend(_entities(getattr(node, name)))
    elif isinstance(node, list | tuple):
        for item in node:
            found.extend(_entities(item))
    elif isinstance(node, dict):
        for item in node.values():
            found.extend(_entities(item))
    return found


def source_rows(scenario: Scenario) -> list[SourceRow]:
    """Sources first, then assumptions; each grouped by (type, field, citation) in scenario order."""
    rows: list[SourceRow] = []
    for kind in ("source", "assumption"):
        groups: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        for entity in _entities(scenario):
            table = entity.sources if kind == "source" else entity.assumptions
            for name, citation in table.items():
                groups.setdefault((type(entity).__name__, name, citation), []).append(
                    (entity.id, _value(entity, name)))
        for (etype, name, citation), members in groups.items():
            values = sorted({v for _, v in members})
            value = values[0] if len(values) == 1 else f"{len(values)} values"
            rows.append(SourceRow(kind=kind, entity=etype, ids=tuple(i for i, _ in members), field=name,
                                  value=value, parts=citation_parts(citation)))
    return rows
