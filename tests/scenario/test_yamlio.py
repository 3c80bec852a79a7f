from __future__ import annotations

import datetime as dt
import math

from hypothesis import given
from hypothesis import strategies as st

from sovcloud.scenario.yamlio import Doc, dump_yaml, merge, read_yaml


def test_lines_are_recorded() -> None:
    doc, problems = read_yaml("a: 1\nb:\n  - id: x\n    v: 2\n", "f.yaml")
    assert not problems and doc is not None
    assert doc.locate(("b", 0, "v")) == ("f.yaml", 4)
    assert doc.locate(("b", 0, "missing")) == ("f.yaml", 3)


def test_duplicate_keys_are_problems() -> None:
    doc, problems = read_yaml("a: 1\na: 2\n", "f.yaml")
    assert doc is None and problems[0].line == 2 and "twice" in problems[0].message


def test_non_mapping_document() -> None:
    doc, problems = read_yaml("- 1\n- 2\n", "f.yaml")
    assert doc is None and "mapping" in problems[0].message


def test_merge_by_id_keeps_origins() -> None:
    base, _ = read_yaml("items:\n  - {id: a, v: 1}\n  - {id: b, v: 2}\n", "base.yaml")
    over, _ = read_yaml("items:\n  - id: b\n    v: 3\n  - {id: c, v: 4}\n  - {id: a, remove: true}\n", "over.yaml")
    assert base is not None and over is not None
    merged = merge(base, over)
    assert merged.data == {"items": [{"id": "b", "v": 3}, {"id": "c", "v": 4}]}
    assert merged.locate(("items", 0, "v")) == ("over.yaml", 3)
    assert merged.locate(("items", 1, "v"))[0] == "over.yaml"


keys = st.sampled_from(["a", "b", "c"])
values = st.recursive(st.integers(), lambda inner: st.dictionaries(keys, inner, max_size=3), max_leaves=8)


@given(st.dictionaries(keys, values, max_size=3), st.dictionaries(keys, values, max_size=3))
def test_merge_overlay_wins_and_inputs_untouched(a: dict[str, object], b: dict[str, object]) -> None:
    import copy

    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    merged = merge(Doc(a), Doc(b)).data
    assert a == a0 and b == b0
    for k, v in b.items():
        if not isinstance(v, dict):
            assert merged[k] == v
    assert set(merged) == set(a) | set(b)


def test_yaml_1_1_scalars_read_as_pyyaml_reads_them() -> None:
    text = ("a: NO\nb: yes\nc: 'NO'\nd: y\ne: 1e3\nf: 1.0e+3\ng: 010\nh: 1:30\ni: 2025-01-02\nj: 0x1F\nk: 1_000\n"
            "l: ~\nm: .inf\nn: Off\n")
    doc, problems = read_yaml(text, "f.yaml")
    assert not problems and doc is not None
    assert doc.data == {"a": False, "b": True, "c": "NO", "d": "y", "e": "1e3", "f": 1000.0, "g": 8, "h": 90,
                        "i": dt.date(2025, 1, 2), "j": 31, "k": 1000, "l": None, "m": math.inf, "n": False}


def test_data_is_plain_python() -> None:
    text = "a:\n  b:\n  - 1\n  - 1.5\n  - 0x10\n  - 'q'\n  - |\n    text\nt: 2025-01-02 03:04:05Z\n"
    doc, _ = read_yaml(text, "f.yaml")
    assert doc is not None
    assert type(doc.data) is dict and type(doc.data["a"]) is dict and type(doc.data["a"]["b"]) is list
    assert [type(v) for v in doc.data["a"]["b"]] == [int, float, int, str, str]
    assert type(doc.data["t"]) is dt.datetime and doc.data["t"].tzinfo == dt.UTC


def test_every_duplicate_key_is_reported_at_its_line() -> None:
    doc, problems = read_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "f.yaml")
    assert doc is None
    assert [(p.line, p.field) for p in problems] == [(4, "b.c"), (5, "a")]


def test_merge_key_override_is_not_a_duplicate() -> None:
    doc, problems = read_yaml("base: &b {x: 1, y: 1}\nc:\n  <<: *b\n  y: 2\n", "f.yaml")
    assert not problems and doc is not None
    assert doc.data["c"] == {"x": 1, "y": 2}
    assert doc.locate(("c", "x")) == ("f.yaml", 1) and doc.locate(("c", "y")) == ("f.yaml", 4)


def test_alias_paths_get_the_anchored_lines() -> None:
    doc, _ = read_yaml("a: &x\n  - 1\n  - 2\nb: *x\n", "f.yaml")
    assert doc is not None and doc.data == {"a": [1, 2], "b": [1, 2]}
    assert doc.locate(("b",)) == ("f.yaml", 4) and doc.locate(("b", 1)) == ("f.yaml", 3)


def test_unknown_tag_and_syntax_error_are_located() -> None:
    doc, problems = read_yaml("a: 1\nb: !secret x\n", "f.yaml")
    assert doc is None and problems[0].line == 2 and problems[0].field == "b" and "tag" in problems[0].message
    doc, problems = read_yaml("a:\n  - x\n - y\n", "f.yaml")
    assert doc is None and problems[0].line == 3 and problems[0].field == "(YAML syntax)"


def test_dump_quotes_what_yaml_1_1_would_misread() -> None:
    text = dump_yaml({"country": "NO", "version": "1.0", "tiny": 1e-05, "big": 1e17, "flag": True, "d": {2026: [1]}})
    assert text == "country: 'NO'\nversion: '1.0'\ntiny: 1.0e-05\nbig: 1.0e+17\nflag: true\nd:\n  2026:\n  - 1\n"


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text() | st.integers(), inner, max_size=4),
    max_leaves=10,
)


@given(st.dictionaries(st.text() | st.integers(), plain, max_size=4), st.sampled_from([20, 80]))
def test_dump_reads_back_to_the_same_data(data: dict[object, object], width: int) -> None:
    doc, problems = read_yaml(dump_yaml(data, width=width), "dumped.yaml")
    assert not problems and doc is not None and doc.data == data
