"""Turn validation failures into :class:`~sovcloud.errors.Problem` lines a person can act on.

Two sources of problems are reported together, so a user sees every error at once:
pydantic's field errors, and the cross-references pydantic cannot see (a site naming an unknown
chip, a duplicate id, a rule naming an unknown jurisdiction, a period outside the horizon). The
cross-checks read the raw merged data, so they run even when field validation failed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from sovcloud.errors import Problem
from sovcloud.geo import countries
from sovcloud.scenario.yamlio import Doc, Path

__all__ = ["cross_check", "display_path", "from_validation_error"]


def _get(data: Any, path: Path) -> Any:
    cur = data
    for p in path:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, dict) and isinstance(p, str) and p.lstrip("-").isdigit() and int(p) in cur:
            cur = cur[int(p)]
        elif isinstance(cur, list) and isinstance(p, int) and 0 <= p < len(cur):
            cur = cur[p]
        else:
            return _MISSING
    return cur


_MISSING = object()


def display_path(data: Any, path: Path) -> str:
    """``sites[eu-central-1].options[expand].power_cap_mw.2026``: list items shown by their id."""
    out = ""
    cur = data
    for p in path:
        if isinstance(p, int) and isinstance(cur, list):
            item = cur[p] if 0 <= p < len(cur) else None
            label = item["id"] if isinstance(item, dict) and isinstance(item.get("id"), str) else p
            out += f"[{label}]"
            cur = item
        else:
            out += f".{p}" if out else str(p)
            cur = cur.get(p, cur.get(int(p)) if isinstance(p, str) and p.isdigit() else None) \
                if isinstance(cur, dict) else None
    return out or "(document)"


def _show(value: Any) -> str:
    if value is _MISSING:
        return ""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _fields_at(model: type[BaseModel], loc: Path) -> list[str]:
    """Field names of the record that holds the last element of ``loc`` (for spelling hints)."""
    current: list[type[BaseModel]] = [model]
    for part in loc[:-1]:
        if isinstance(part, int) or not current:
            continue
        nxt: list[type[BaseModel]] = []
        for m in current:
            field = m.model_fields.get(str(part))
            if field is not None:
                nxt.extend(_models_in(field.annotation))
        if nxt:
            current = nxt
    return sorted({name for m in current for name in m.model_fields})


def _hint(err: dict[str, Any], model: type[BaseModel]) -> tuple[str, str]:
    """(message, fix hint) for one pydantic error."""
    kind = str(err["type"])
    msg = str(err["msg"])
    ctx = err.get("ctx") or {}
    last = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "missing":
        return "required field is missing", f"add '{last}' (see `sovcloud schema`)"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(last, _fields_at(model, tuple(err["loc"])), n=1, cutoff=0.5)
        return "unknown field", (f"did you mean '{close[0]}'?" if close else "remove it or fix its spelling")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "")
        return msg, f"use a value {op} {bound}"
    if kind in ("float_parsing", "int_parsing", "float_type", "int_type", "int_from_float"):
        return msg, "write a plain number without units: the unit is part of the field name (_mw, _usd, _ms, _s)"
    if kind == "literal_error":
        return msg, f"use {ctx.get('expected', 'one of the allowed values')}"
    if kind == "string_type" and isinstance(err.get("input"), bool):
        return msg, "quote it: YAML reads bare NO/YES/ON/OFF as booleans (write 'NO' for Norway)"
    if kind == "string_pattern_mismatch":
        return msg, "ids use lower-case letters, digits, '.', '_' and '-'"
    if kind in ("value_error", "assertion_error"):
        text = msg.removeprefix("Value error, ")
        head, _, tail = text.partition("; ")
        return head, tail or "see the field's description in `sovcloud schema`"
    return msg, "see the expected type in `sovcloud schema`"


def from_validation_error(exc: ValidationError, doc: Doc, model: type[BaseModel]) -> list[Problem]:
    """One Problem per pydantic error, located in the file and line the value came from."""
    problems = []
    for err in exc.errors(include_url=False):
        loc: Path = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic reports dict keys that failed validation as '[key]' entries
        loc = tuple(p.split("]")[0].lstrip("[") if isinstance(p, str) and p.endswith("[key]") else p for p in loc)
        file, line = doc.locate(loc)
        value = _get(doc.data, loc)
        message, hint = _hint(dict(err), model)
        problems.append(Problem(file, line, display_path(doc.data, loc), _show(value), message, hint))
    return problems


# --- cross-references ---------------------------------------------------------------------

def _items(data: Any, path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    seq = _get(data, path)
    if isinstance(seq, list):
        for i, item in enumerate(seq):
            if isinstance(item, dict):
                yield path + (i,), item


def _ids(data: Any, path: Path) -> set[str]:
    return {str(item["id"]) for _, item in _items(data, path) if "id" in item}


_ID_LISTS: list[Path] = [("sites",), ("accelerators",), ("models",), ("workloads",), ("demand", "zones"),
                         ("policies", "residency"), ("policies", "export"), ("policies", "screening")]


@dataclass
class _Findings:
    """The cross-check problems of one merged document, in the order found."""

    doc: Doc
    data: Any
    out: list[Problem] = field(default_factory=list)

    def add(self, path: Path, message: str, hint: str, value: Any = _MISSING) -> None:
        file, line = self.doc.locate(path)
        shown = _show(_get(self.data, path) if value is _MISSING else value)
        self.out.append(Problem(file, line, display_path(self.data, path), shown, message, hint))


def _duplicate_ids(f: _Findings) -> None:
    for path in _ID_LISTS:
        seen: dict[str, Path] = {}
        for p, item in _items(f.data, path):
            key = item.get("id")
            if isinstance(key, str):
                if key in seen:
                    f.add(p + ("id",), f"duplicate id (first at {display_path(f.data, seen[key])})",
                          "give each entry a unique id, or merge the two entries")
                seen.setdefault(key, p)


def _site_chips(f: _Findings, chips: set[str]) -> None:
    for p, site in _items(f.data, ("sites",)):
        for key in ("installed_chips", "allowed_chips"):
            refs = site.get(key)
            for chip in (refs if isinstance(refs, (list, dict)) else []):
                if chip not in chips:
                    close = difflib.get_close_matches(str(chip), sorted(chips), n=1)
                    f.add(p + (key,), f"unknown chip '{chip}'",
                          f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(sorted(chips))}",
                          chip)


def _jurisdictions(f: _Findings, path: Path, values: Any, names: set[str]) -> None:
    """Each of ``values`` must be '*', a group name or an ISO code (``names`` holds the last two)."""
    for v in values if isinstance(values, list) else []:
        if isinstance(v, bool):
            f.add(path, f"'{v}' is a boolean, not a jurisdiction",
                  "quote it: YAML reads bare NO/YES/ON/OFF as booleans (write 'NO' for Norway)", v)
        elif v != "*" and v not in names:
            close = difflib.get_close_matches(str(v), sorted(names), n=1)
            f.add(path, f"unknown jurisdiction '{v}'",
                  (f"did you mean '{close[0]}'? " if close else "")
                  + "use an ISO 3166 country code, '*' or a group from policies.groups", v)


def _policy_refs(f: _Findings, chips: set[str]) -> None:
    """Jurisdictions in groups, residency and export rules and the default; chips named by export rules."""
    groups = _get(f.data, ("policies", "groups"))
    names = (set(groups) if isinstance(groups, dict) else set()) | set(countries())
    if isinstance(groups, dict):
        for name, members in groups.items():
            _jurisdictions(f, ("policies", "groups", name), members, names)
    for p, rule in _items(f.data, ("policies", "residency")):
        _jurisdictions(f, p + ("origin",), rule.get("origin"), names)
        _jurisdictions(f, p + ("allowed",), rule.get("allowed"), names)
    for p, rule in _items(f.data, ("policies", "export")):
        _jurisdictions(f, p + ("operator_hq",), rule.get("operator_hq"), names)
        _jurisdictions(f, p + ("site_country",), rule.get("site_country"), names)
        for chip in rule.get("chips") or []:
            if chip != "*" and ":" not in str(chip) and chip not in chips:
                f.add(p + ("chips",), f"unknown chip '{chip}'",
                      "use a chip id, 'vendor:NAME', 'origin:CC' or '*'", chip)
    _jurisdictions(f, ("policies", "default_allowed"), _get(f.data, ("policies", "default_allowed")), names)


def _country_codes(f: _Findings) -> None:
    iso = set(countries())
    paths: list[Path] = [("operator", "hq_country")]
    paths += [(*p, "country") for p, _ in _items(f.data, ("sites",))]
    for path in paths:
        v = _get(f.data, path)
        if isinstance(v, str) and v not in iso:
            f.add(path, f"unknown country code '{v}'", "use an ISO 3166-1 alpha-2 code such as DE or CN")


def _demand_refs(f: _Findings) -> None:
    """Models and workloads named by demand.tokens_per_user_day."""
    models, workloads = _ids(f.data, ("models",)), _ids(f.data, ("workloads",))
    tpu = _get(f.data, ("demand", "tokens_per_user_day"))
    if isinstance(tpu, dict):
        for m, per_w in tpu.items():
            if m not in models:
                f.add(("demand", "tokens_per_user_day", m), f"unknown model '{m}'",
                      f"use one of: {', '.join(sorted(models))}", m)
            for w in per_w if isinstance(per_w, dict) else {}:
                if w not in workloads:
                    f.add(("demand", "tokens_per_user_day", m, w), f"unknown workload '{w}'",
                          f"use one of: {', '.join(sorted(workloads))}", w)


def _periods(f: _Findings) -> None:
    """Every per-period table is keyed by horizon periods; demand.growth covers all of them."""
    periods = _get(f.data, ("horizon", "periods"))
    if not isinstance(periods, list):
        return
    pset = set(periods)

    def check(path: Path, table: Any) -> None:
        for k in table if isinstance(table, dict) else {}:
            if k not in pset:
                f.add(path + (k,), f"period {k} is not in the horizon {sorted(pset)}",
                      "use one of the horizon's periods, or add it to horizon.periods", k)

    for p, site in _items(f.data, ("sites",)):
        check(p + ("installed_power_mw",), site.get("installed_power_mw"))
        for q, opt in _items(f.data, p + ("options",)):
            check(q + ("power_cap_mw",), opt.get("power_cap_mw"))
    for p, chip in _items(f.data, ("accelerators",)):
        check(p + ("supply_cap",), chip.get("supply_cap"))
    growth = _get(f.data, ("demand", "growth"))
    check(("demand", "growth"), growth)
    if isinstance(growth, dict):
        missing = sorted(pset - set(growth))
        if missing:
            f.add(("demand", "growth"), f"no growth factor for period(s) {missing}",
                  "give demand.growth a multiplier for every horizon period")
    check(("policies", "renewable_target"), _get(f.data, ("policies", "renewable_target")))
    check(("policies", "budget", "per_period_usd"), _get(f.data, ("policies", "budget", "per_period_usd")))


def cross_check(doc: Doc) -> list[Problem]:
    """Problems pydantic's per-field validation cannot see.

    In this order: duplicate ids, unknown chips at sites, jurisdictions and chips in policies, country
    codes, models and workloads named by demand, and periods outside the horizon.
    """
    f = _Findings(doc, doc.data if isinstance(doc.data, dict) else {})
    chips = _ids(f.data, ("accelerators",))
    _duplicate_ids(f)
    _site_chips(f, chips)
    _policy_refs(f, chips)
    _country_codes(f)
    _demand_refs(f)
    _periods(f)
    return f.out
