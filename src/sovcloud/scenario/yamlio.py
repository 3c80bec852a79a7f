"""YAML documents that remember where each value came from, the ``extends`` merge, and writing YAML.

:func:`read_yaml` parses one document with ruamel.yaml's round-trip loader, which knows the line of
every key and item. Files are read as YAML 1.1, with the scalar table of PyYAML's safe loader (see
:mod:`sovcloud.scenario.yaml11`), not as ruamel's default YAML 1.2: the bundled scenarios, the tests
and users' files were written against that reading, and under 1.2 a bare ``yes``/``no``/``on``/``off``
would silently become a string. So a bare ``NO`` is a boolean and country codes are quoted (``'NO'``),
as the README says; the diagnostics explain it when a boolean stands where a jurisdiction belongs.

The data comes back as plain dicts, lists and scalars (no ruamel types), plus the line of every
value, keyed by its path: a tuple of mapping keys and list indices. The line of a mapping entry is
the line of its key, of a list item the line the item starts on. Every duplicate key, unknown tag
(``!foo``) and non-scalar key is reported, each at its line; a syntax error stops the parse and is
reported at the line the parser stopped on. An alias (``*name``) shares the anchored value; the paths
under it get the lines of the anchored value.

:func:`merge` overlays one document on another the way scenario overrides work:

* mappings merge key by key;
* lists of records with an ``id`` merge by id: a record with a known id updates that record,
  a new id is appended, and ``{id: X, remove: true}`` deletes X;
* anything else (scalars, plain lists) is replaced.

The merged document keeps an ``origins`` map from each merged path to (file, line), so an error
found after merging still points at the line the user wrote.

:func:`dump_yaml` writes plain data back in the same dialect (block style, keys in order), so that
:func:`read_yaml` reads it back unchanged.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import sys
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.comments import (
    CommentedKeyMap,
    CommentedMap,
    CommentedOrderedMap,
    CommentedSeq,
    CommentedSet,
    TaggedScalar,
)
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from sovcloud.errors import Problem
from sovcloud.scenario.yaml11 import dumper, duplicates, loader

__all__ = ["Doc", "Path", "dump_yaml", "merge", "read_yaml"]

Path = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"


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


def _scalar(value: Any) -> Any:
    """A ruamel scalar as the plain Python value (bool, int, float, str, datetime, date, bytes or None)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, ScalarBoolean):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dt.datetime):
        offset = value.utcoffset()
        return dt.datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                           value.microsecond, tzinfo=None if offset is None else dt.timezone(offset))
    return value


def _line(container: Any, key: Any, default: int) -> int:
    """1-based line of ``container``'s key or item ``key``; for a key merged in with ``<<``, its line there."""
    data = container.lc.data or {}
    if key in data:
        return int(data[key][0]) + 1
    for merged in getattr(container, "merge", ()):
        source = merged[1] if isinstance(merged, tuple) else merged
        if key in source:
            return _line(source, key, default)
    return default


def _keys(mapping: CommentedMap) -> list[Any]:
    """Keys in PyYAML's order: those merged in with ``<<`` first, in the order merged, then the mapping's own."""
    merged = [m[1] if isinstance(m, tuple) else m for m in getattr(mapping, "merge", ())]
    return list(dict.fromkeys([k for m in merged for k in _keys(m)] + list(mapping)))


class _Plain:
    """Turns ruamel's round-trip tree into plain data, recording the line of every path and what is wrong.

    A node met again through an alias is converted once (the data shares it, as the YAML does); its
    lines are recorded again under each path it appears at.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.origins: dict[Path, tuple[str, int]] = {}
        self.problems: list[Problem] = []
        self.paths: dict[int, Path] = {}
        self._done: dict[int, Any] = {}
        self._open: set[int] = set()

    def value(self, node: Any, path: Path, line: int) -> Any:
        self.origins[path] = (self.filename, line)
        tag = node.tag.value if isinstance(node, (CommentedMap, CommentedSeq, TaggedScalar)) else None
        if isinstance(node, TaggedScalar):
            if tag == _STR_TAG:
                return str(node.value)
        elif tag is None or isinstance(node, CommentedOrderedMap):
            if id(node) not in self._done:
                return self._container(node, path, line)
            if id(node) not in self._open:
                self._lines(node, path)
            return self._done[id(node)]
        self._unknown_tag(path, line, tag)
        return None

    def _unknown_tag(self, path: Path, line: int, tag: Any) -> None:
        self.problems.append(Problem(self.filename, line, _dotted(path), str(tag),
                                     "could not determine a constructor for the tag",
                                     "remove the tag: scenario files hold plain mappings, lists and values"))

    def _container(self, node: Any, path: Path, line: int) -> Any:
        if isinstance(node, CommentedOrderedMap):
            return [(self._key(k, path, line), self.value(v, path, line)) for k, v in node.items()]
        if isinstance(node, CommentedSet):
            return {_scalar(k) for k in node}
        if not isinstance(node, (CommentedMap, CommentedSeq)):
            return _scalar(node)
        self._open.add(id(node))
        if isinstance(node, CommentedMap):
            self.paths[id(node)] = path
            out: Any = {}
            self._done[id(node)] = out
            for k in _keys(node):
                at = _line(node, k, line)
                key = self._key(k, path, at)
                out[key] = self.value(node[k], path + (_step(key),), at)
        else:
            out = []
            self._done[id(node)] = out
            out.extend(self.value(v, path + (i,), _line(node, i, line)) for i, v in enumerate(node))
        self._open.discard(id(node))
        return out

    def _lines(self, node: Any, path: Path) -> None:
        """Record the lines of an already converted node's subtree under another path."""
        if isinstance(node, (CommentedMap, CommentedSeq)) and id(node) not in self._open:
            self._open.add(id(node))
            for k, v in (node.items() if isinstance(node, CommentedMap) else enumerate(node)):
                step = _step(_scalar(k)) if isinstance(node, CommentedMap) else k
                self.origins[path + (step,)] = (self.filename, _line(node, k, self.origins[path][1]))
                self._lines(v, path + (step,))
            self._open.discard(id(node))

    def _key(self, key: Any, path: Path, line: int) -> Any:
        if isinstance(key, (CommentedKeyMap, tuple)):
            self.problems.append(Problem(self.filename, line, "(YAML syntax)", "",
                                         "while constructing a mapping found unhashable key",
                                         "a key must be a single value such as a name or a number"))
            return str(key)
        if isinstance(key, TaggedScalar):
            if key.tag.value != _STR_TAG:
                self._unknown_tag(path, line, key.tag.value)
            return str(key.value)
        return _scalar(key)


def _step(key: Any) -> str | int:
    """The path element of a mapping key: the key itself when it is a string or an integer."""
    return key if isinstance(key, (str, int)) else str(key)


def read_yaml(text: str, filename: str) -> tuple[Doc | None, list[Problem]]:
    """Parse ``text``; return the document, or the syntax, duplicate-key and tag problems found."""
    yaml = loader()
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        return None, [
            Problem(filename, line, "(YAML syntax)", "", what or "invalid YAML",
                    "check indentation, colons and quotes on or just before this line")
        ]
    except YAMLError as exc:
        return None, [Problem(filename, None, "(YAML)", "", str(exc), "fix the YAML syntax")]
    root_line = tree.lc.line + 1 if isinstance(tree, (CommentedMap, CommentedSeq)) else 1
    plain = _Plain(filename)
    data = plain.value(tree, (), root_line) if tree is not None else None
    problems = plain.problems
    for mapping, key, line in sorted(duplicates(yaml), key=lambda d: d[2]):
        problems.append(Problem(
            filename, line, _dotted(plain.paths.get(id(mapping), ()) + (_step(_scalar(key)),)), "",
            "key appears twice in one mapping (the first value would be silently lost)",
            "keep one of the two entries",
        ))
    if data is not None and not isinstance(data, dict):
        problems.append(Problem(filename, 1, "(document)", type(data).__name__,
                                "a scenario file must be a mapping of sections",
                                "start with keys such as name:, extends:, sites:"))
    return (Doc(data if data is not None else {}, plain.origins) if not problems else None), problems


def dump_yaml(data: Any, width: int = 80) -> str:
    """``data`` (plain dicts, lists and scalars) as YAML that :func:`read_yaml` reads back to the same data.

    Block style, keys in insertion order, non-ASCII text as it is, long values folded near ``width``
    columns. The spaces ruamel leaves at the end of a folded line are dropped (the reader discards white
    space before a line break in the plain and quoted scalars written here; block scalars are never
    written). Two cases do not read back: a value folded after two spaces (read as one) and a line break
    other than ``\\n`` written as it is; so the text is read back, and written again unfolded and with
    non-ASCII characters escaped when it does not give ``data``.
    """
    text = _dump(data, width, True)
    doc, _ = read_yaml(text, "<dump>")
    return text if doc is not None and doc.data == data else _dump(data, sys.maxsize, False)


def _dump(data: Any, width: int, allow_unicode: bool) -> str:
    out = io.StringIO()
    dumper(width, allow_unicode).dump(data, out)
    return "\n".join(line.rstrip(" ") for line in out.getvalue().split("\n"))


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
