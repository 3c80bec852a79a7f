"""Turn validation failures into :class:`~sovcloud.errors.Problem` lines a person can act on.

Two sources of problems are reported together, so a user sees every error at once:
pydantic's field errors, and the cross-references pydantic cannot see (a site naming an unknown
chip, a duplicate id, a rule naming an unknown jurisdiction, a period outside the horizon). The
cross-checks read the raw merged data, so they run even when field validation failed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
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


def cross_check(doc: Doc) -> list[Problem]:
    """Problems pydantic's per-field validation cannot see."""
    data = doc.data if isinstance(doc.data, dict) else {}
    out: list[Problem] = []

    def add(path: Path, message: str, hint: str, value: Any = _MISSING) -> None:
        file, line = doc.locate(path)
        shown = _show(_get(data, path) if value is _MISSING else value)
        out.append(Problem(file, line, display_path(data, path), shown, message, hint))

    # duplicate ids
    for path in [("sites",), ("accelerators",), ("models",), ("workloads",), ("demand", "zones"),
                 ("policies", "residency"), ("policies", "export"), ("policies", "screening")]:
        seen: dict[str, Path] = {}
        for p, item in _items(data, path):
            key = item.get("id")
            if isinstance(key, str):
                if key in seen:
                    add(p + ("id",), f"duplicate id (first at {display_path(data, seen[key])})",
                        "give each entry a unique id, or merge the two entries")
                seen.setdefault(key, p)

    chips, models, workloads = _ids(data, ("accelerators",)), _ids(data, ("models",)), _ids(data, ("workloads",))
    for p, site in _items(data, ("sites",)):
        for key in ("installed_chips", "allowed_chips"):
            refs = site.get(key)
            for chip in (refs if isinstance(refs, (list, dict)) else []):
                if chip not in chips:
                    close = difflib.get_close_matches(str(chip), sorted(chips), n=1)
                    add(p + (key,), f"unknown chip '{chip}'",
                        f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(sorted(chips))}",
                        chip)

    # jurisdictions
    groups = _get(data, ("policies", "groups"))
    group_names = set(groups) if isinstance(groups, dict) else set()
    iso = set(countries())

    def check_juris(path: Path, values: Any) -> None:
        for v in values if isinstance(values, list) else []:
            if isinstance(v, bool):
                add(path, f"'{v}' is a boolean, not a jurisdiction",
                    "quote it: YAML reads bare NO/YES/ON/OFF as booleans (write 'NO' for Norway)", v)
            elif v != "*" and v not in group_names and v not in iso:
                close = difflib.get_close_matches(str(v), sorted(group_names | iso), n=1)
                add(path, f"unknown jurisdiction '{v}'",
                    (f"did you mean '{close[0]}'? " if close else "")
                    + "use an ISO 3166 country code, '*' or a group from policies.groups", v)

    if isinstance(groups, dict):
        for name, members in groups.items():
            check_juris(("policies", "groups", name), members)
    for p, rule in _items(data, ("policies", "residency")):
        check_juris(p + ("origin",), rule.get("origin"))
        check_juris(p + ("allowed",), rule.get("allowed"))
    for p, rule in _items(data, ("policies", "export")):
        check_juris(p + ("operator_hq",), rule.get("operator_hq"))
        check_juris(p + ("site_country",), rule.get("site_country"))
        for chip in rule.get("chips") or []:
            if chip != "*" and ":" not in str(chip) and chip not in chips:
                add(p + ("chips",), f"unknown chip '{chip}'",
                    "use a chip id, 'vendor:NAME', 'origin:CC' or '*'", chip)
    check_juris(("policies", "default_allowed"), _get(data, ("policies", "default_allowed")))
    country_paths: list[Path] = [("operator", "hq_country")]
    country_paths += [(*p, "country") for p, _ in _items(data, ("sites",))]
    for cpath in country_paths:
        v = _get(data, cpath)
        if isinstance(v, str) and v not in iso:
            add(cpath, f"unknown country code '{v}'", "use an ISO 3166-1 alpha-2 code such as DE or CN")

    # models and workloads named by demand
    tpu = _get(data, ("demand", "tokens_per_user_day"))
    if isinstance(tpu, dict):
        for m, per_w in tpu.items():
            if m not in models:
                add(("demand", "tokens_per_user_day", m), f"unknown model '{m}'",
                    f"use one of: {', '.join(sorted(models))}", m)
            for w in per_w if isinstance(per_w, dict) else {}:
                if w not in workloads:
                    add(("demand", "tokens_per_user_day", m, w), f"unknown workload '{w}'",
                        f"use one of: {', '.join(sorted(workloads))}", w)

    # periods
    periods = _get(data, ("horizon", "periods"))
    if isinstance(periods, list):
        pset = set(periods)

        def check_periods(path: Path, table: Any) -> None:
            for k in table if isinstance(table, dict) else {}:
                if k not in pset:
                    add(path + (k,), f"period {k} is not in the horizon {sorted(pset)}",
                        "use one of the horizon's periods, or add it to horizon.periods", k)

        for p, site in _items(data, ("sites",)):
            check_periods(p + ("installed_power_mw",), site.get("installed_power_mw"))
            for q, opt in _items(data, p + ("options",)):
                check_periods(q + ("power_cap_mw",), opt.get("power_cap_mw"))
        for p, chip in _items(data, ("accelerators",)):
            check_periods(p + ("supply_cap",), chip.get("supply_cap"))
        growth = _get(data, ("demand", "growth"))
        check_periods(("demand", "growth"), growth)
        if isinstance(growth, dict):
            missing = sorted(pset - set(growth))
            if missing:
                add(("demand", "growth"), f"no growth factor for period(s) {missing}",
                    "give demand.growth a multiplier for every horizon period")
        check_periods(("policies", "renewable_target"), _get(data, ("policies", "renewable_target")))
        check_periods(("policies", "budget", "per_period_usd"), _get(data, ("policies", "budget", "per_period_usd")))
    return out
