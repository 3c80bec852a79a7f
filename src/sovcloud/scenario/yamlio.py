"""YAML documents that remember where each value came from, and the ``extends`` merge.

:func:`read_yaml` parses one document and returns the data plus the line of every value
(keyed by its path: a tuple of mapping keys and list indices). :func:`merge` overlays one
document on another the way scenario overrides work:

* mappings merge key by key;
* lists of records with an ``id`` merge by id: a record with a known id updates that record,
  a new id is appended, and ``{id: X, remove: true}`` deletes X;
* anything else (scalars, plain lists) is replaced.

The merged document keeps an ``origins`` map from each merged path to (file, line), so an error
found after merging still points at the line the user wrote.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from sovcloud.errors import Problem

__all__ = ["Doc", "Path", "merge", "read_yaml"]

Path = tuple[str | int, ...]


@dataclass
class Doc:
    """A parsed (possibly merged) document with the origin of every path."""

    data: Any
    origins: dict[Path, tuple[str, int]] = field(default_factory=dict)

    def locate(self, path: Path) -> tuple[str, int | None]:
        """File and line of the deepest known prefix of ``path``."""
        norm = tuple(str(p) for p in path)
        keyed = {tuple(str(p) for p in k): v for k, v in self.origins.items()}
        for n in range(len(norm), -1, -1):
            hit = keyed.get(norm[:n])
            if hit is not None:
                return hit
        return ("<scenario>", None)


def _scalar_key(node: yaml.Node) -> str | int:
    if isinstance(node, yaml.ScalarNode):
        if node.tag.endswith(":int"):
            try:
                return int(node.value.replace("_", ""))
            except ValueError:
                return str(node.value)
        return str(node.value)
    return str(node.start_mark)


def read_yaml(text: str, filename: str) -> tuple[Doc | None, list[Problem]]:
    """Parse ``text``; return the document or the syntax/duplicate-key problems found."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        return None, [
            Problem(filename, line, "(YAML syntax)", "", what or "invalid YAML",
                    "check indentation, colons and quotes on or just before this line")
        ]
    except yaml.YAMLError as exc:
        return None, [Problem(filename, None, "(YAML)", "", str(exc), "fix the YAML syntax")]
    finally:
        loader.dispose()

    problems: list[Problem] = []
    origins: dict[Path, tuple[str, int]] = {}

    def walk(n: yaml.Node, path: Path) -> None:
        origins[path] = (filename, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[str | int] = set()
            for k, v in n.value:
                key = _scalar_key(k)
                if key in seen:
                    problems.append(Problem(
                        filename, k.start_mark.line + 1, _dotted(path + (key,)), "",
                        "key appears twice in one mapping (the first value would be silently lost)",
                        "keep one of the two entries",
                    ))
                seen.add(key)
                walk(v, path + (key,))
                origins[path + (key,)] = (filename, k.start_mark.line + 1)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, path + (i,))

    if node is not None:
        walk(node, ())
    if data is not None and not isinstance(data, dict):
        problems.append(Problem(filename, 1, "(document)", type(data).__name__,
                                "a scenario file must be a mapping of sections",
                                "start with keys such as name:, extends:, sites:"))
    return (Doc(data if data is not None else {}, origins) if not problems else None), problems


def _dotted(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "id" in v for v in value)


def merge(base: Doc, over: Doc) -> Doc:
    """Overlay ``over`` on ``base`` (see module docstring); neither input is modified."""
    data = copy.deepcopy(base.data)
    origins = dict(base.origins)

    def take(src: Path, dst: Path) -> None:
        """Copy the origins of ``over``'s subtree at ``src`` to merged path ``dst``."""
        for k in [k for k in origins if k[: len(dst)] == dst]:
            del origins[k]
        n = len(src)
        for k, v in over.origins.items():
            if k[:n] == src:
                origins[dst + k[n:]] = v

    def rec(b: Any, o: Any, src: Path, dst: Path) -> Any:
        if isinstance(b, dict) and isinstance(o, dict):
            for k, v in o.items():
                if k in b:
                    b[k] = rec(b[k], v, src + (k,), dst + (k,))
                else:
                    b[k] = copy.deepcopy(v)
                    take(src + (k,), dst + (k,))
            if src in over.origins:
                origins.setdefault(dst, over.origins[src])
            return b
        if _is_id_list(o) and (_is_id_list(b) or b == []):
            index = {item["id"]: i for i, item in enumerate(b)}
            for j, item in enumerate(o):
                if item.get("remove") is True:
                    if item["id"] in index:
                        b[index[item["id"]]] = None
                    continue
                if item["id"] in index:
                    i = index[item["id"]]
                    b[i] = rec(b[i], item, src + (j,), dst + (i,))
                else:
                    index[item["id"]] = len(b)
                    b.append(copy.deepcopy(item))
                    take(src + (j,), dst + (len(b) - 1,))
            if any(item is None for item in b):
                kept = [i for i, item in enumerate(b) if item is not None]
                remap = {old: new for new, old in enumerate(kept)}
                moved: dict[Path, tuple[str, int]] = {}
                for k, v in origins.items():
                    if k[: len(dst)] == dst and len(k) > len(dst) and isinstance(k[len(dst)], int):
                        old = k[len(dst)]
                        if isinstance(old, int) and old in remap:
                            moved[dst + (remap[old],) + k[len(dst) + 1:]] = v
                    else:
                        moved[k] = v
                origins.clear()
                origins.update(moved)
                b = [item for item in b if item is not None]
            return b
        take(src, dst)
        return copy.deepcopy(o)

    merged = rec(data, over.data, (), ())
    return Doc(merged, origins)
