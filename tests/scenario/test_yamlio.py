from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sovcloud.scenario.yamlio import Doc, merge, read_yaml


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
