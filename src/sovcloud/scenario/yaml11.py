"""The YAML dialect of scenario and gateway files, on ruamel.yaml: YAML 1.1 scalars as PyYAML reads them.

Scenario files are read as YAML 1.1 (``version = (1, 1)``), not ruamel's default YAML 1.2, and with the
implicit-scalar table of PyYAML's safe loader, which these files were written against:

* booleans are ``true/false``, ``yes/no`` and ``on/off`` in lower, Title and UPPER case, so a bare ``NO``
  is ``False`` and a country code must be quoted (``'NO'``); the diagnostics explain this when a boolean
  stands where a jurisdiction belongs. ``y`` and ``n`` stay strings (ruamel's own 1.1 table would make them
  booleans, so an ``x:``/``y:`` pair of keys would turn into ``x``/``True``);
* a float needs a dot (``1.5``, ``1.0e+9``); ``1e9`` and ``1.0e9`` (exponent without a sign) stay strings,
  which pydantic converts where a number is expected;
* integers may be ``0b``/``0x``/``0``-octal/sexagesimal (``1:30`` is 90) and contain ``_``;
* ``~``/``null``/empty is None, ``2025-01-01`` a date, ``<<`` a merge key.

The loader is ruamel's round-trip loader (it keeps the line of every key and item) with two changes:
the resolver above, and a constructor that records every duplicate key in a mapping, with its line,
instead of stopping at the first one, so all of them are reported at once. The dumper writes plain
dicts and lists in block style, keys in insertion order, with the same resolver deciding which strings
need quotes (``'NO'``, ``'1.0'``) and floats always written with a dot (``1.0e-05``), so what it writes
reads back unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.representer import SafeRepresenter
from ruamel.yaml.resolver import VersionedResolver

__all__ = ["VERSION", "Duplicate", "dumper", "duplicates", "loader"]

VERSION = (1, 1)

Duplicate = tuple[Any, Any, int]
"""A repeated key: (the mapping it repeats a key of, the key, its 1-based line)."""

# tag suffix, pattern, first characters a matching plain scalar can start with ('' for the empty scalar)
_IMPLICIT: tuple[tuple[str, re.Pattern[str], str | tuple[str, ...]], ...] = (
    ("bool", re.compile(r"""^(?:yes|Yes|YES|no|No|NO
                        |true|True|TRUE|false|False|FALSE
                        |on|On|ON|off|Off|OFF)$""", re.X), "yYnNtTfFoO"),
    ("float", re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                         |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                         |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                         |[-+]?\.(?:inf|Inf|INF)
                         |\.(?:nan|NaN|NAN))$""", re.X), "-+0123456789."),
    ("int", re.compile(r"""^(?:[-+]?0b[0-1_]+
                       |[-+]?0[0-7_]+
                       |[-+]?(?:0|[1-9][0-9_]*)
                       |[-+]?0x[0-9a-fA-F_]+
                       |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""", re.X), "-+0123456789"),
    ("merge", re.compile(r"^(?:<<)$"), "<"),
    ("null", re.compile(r"^(?: ~ |null|Null|NULL | )$", re.X), ("~", "n", "N", "")),
    ("timestamp", re.compile(r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                             |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
                              (?:[Tt]|[ \t]+)[0-9][0-9]?
                              :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
                              (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""", re.X), "0123456789"),
    ("value", re.compile(r"^(?:=)$"), "="),
)


class _Resolver(VersionedResolver):
    """Resolves plain scalars by the table above, whatever ``%YAML`` directive a document carries."""

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        super().__init__(version, loader, loadumper)
        self._by_first: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
        for suffix, pattern, first in _IMPLICIT:
            for ch in first:
                self._by_first.setdefault(ch, []).append(("tag:yaml.org,2002:" + suffix, pattern))

    @property
    def versioned_resolver(self) -> dict[str, list[tuple[str, re.Pattern[str]]]]:
        return self._by_first

    @property
    def processing_version(self) -> tuple[int, int]:
        return VERSION


class _Constructor(RoundTripConstructor):
    """Round-trip constructor that records duplicate keys (the first value is kept) instead of raising."""

    def __init__(self, preserve_quotes: bool | None = None, loader: Any = None) -> None:
        super().__init__(preserve_quotes=preserve_quotes, loader=loader)
        self.duplicates: list[Duplicate] = []

    def check_mapping_key(self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any) -> bool:
        if key in mapping:
            self.duplicates.append((mapping, key, key_node.start_mark.line + 1))
            return False
        return True


class _Representer(SafeRepresenter):
    """Safe representer whose floats always carry a dot, as the resolver needs to read them back as floats."""

    def represent_float(self, data: Any) -> Any:
        node = super().represent_float(data)
        if "." not in node.value and "e" in node.value:
            node.value = node.value.replace("e", ".0e", 1)
        return node


_Representer.add_representer(float, _Representer.represent_float)


def loader() -> YAML:
    """A fresh round-trip loader of the dialect (one per document: it holds that document's duplicates)."""
    yaml = YAML(typ="rt", pure=True)
    yaml.version = VERSION
    yaml.Resolver = _Resolver
    yaml.Constructor = _Constructor
    return yaml


def duplicates(yaml: YAML) -> list[Duplicate]:
    """The duplicate keys the last :meth:`YAML.load` of ``yaml`` (from :func:`loader`) met, in the order met."""
    constructor = yaml.constructor
    return list(constructor.duplicates) if isinstance(constructor, _Constructor) else []


def dumper(width: int = 80, allow_unicode: bool = True) -> YAML:
    """A safe dumper of the dialect: block style, insertion order, lines folded at ``width``, no ``%YAML`` line.

    Non-ASCII characters are written as they are, or escaped when ``allow_unicode`` is false.
    """
    yaml = YAML(typ="safe", pure=True)
    yaml.Resolver = _Resolver
    yaml.Representer = _Representer
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # ruamel declares it None-only
    yaml.allow_unicode = allow_unicode
    yaml.width = width
    return yaml
