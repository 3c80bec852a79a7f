"""Physics pins of one deployment's estimate (sovcloud.physics.perf) and of the planner's goodput table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sovcloud.errors import PhysicsError
from sovcloud.physics.parallel import best_estimate
from sovcloud.physics.perf import DEFAULT_CASES, SCENARIOS, TP_DEGREES, Workload, estimate, goodput_table
from tests.physics.catalog import SC


def test_hanguang_cannot_host_a_30b_model() -> None:
    r = estimate(SC.model("qwen3-omni-30b-a3b"), SC.chip("hanguang-800"), 1, "int8", 1000, 200)
    assert not r.fits and not r.ok and r.batch == 0 and r.output_tokens_per_s_per_chip == 0
    assert (
        r.reason is not None
        and "192 MB" in r.reason
        and "30.5 GB" in r.reason
        and "no device DRAM" in r.reason
    )


def test_405b_bf16_does_not_fit_one_h100() -> None:
    r = estimate(SC.model("llama-3.1-405b"), SC.chip("h100-sxm"), 1, "bf16", 1000, 1000)
    assert not r.fits
    assert (
        r.reason is not None and "811.8 GB of bf16 weights" in r.reason and "72.0 GB are usable" in r.reason
    )
    assert estimate(SC.model("llama-3.1-405b"), SC.chip("h200-sxm"), 8, "fp8", 1000, 1000).fits


def test_unsupported_precision_gives_reason() -> None:
    r = estimate(SC.model("llama-3.1-70b"), SC.chip("a100-80gb-sxm"), 4, "fp8", 1000, 1000)
    assert not r.fits
    assert r.reason == "a100-80gb-sxm has no fp8 tensor cores; supported: bf16, fp16, int8"
    assert "no fp4" in (estimate(SC.model("qwen3-8b"), SC.chip("h100-sxm"), 1, "fp4", 100, 100).reason or "")


def test_invalid_inputs_raise() -> None:
    m, c = SC.model("qwen3-8b"), SC.chip("h100-sxm")
    with pytest.raises(PhysicsError):
        estimate(m, c, 1, "bf16", 0, 10)
    with pytest.raises(PhysicsError):
        estimate(m, c, 0, "bf16", 10, 10)
    with pytest.raises(PhysicsError):
        estimate(m, c, 1, "bf16", 10, 10, ttft_slo_s=-1.0)
    with pytest.raises(PhysicsError):
        estimate(m, c, 1, "fp3", 10, 10)


def test_ids_are_refused_the_caller_resolves_them() -> None:
    m, c = SC.model("qwen3-8b"), SC.chip("h100-sxm")
    with pytest.raises(PhysicsError, match=r"scenario\.model\(id\)"):
        estimate("qwen3-8b", c, 1, "bf16", 10, 10)  # type: ignore[arg-type]
    with pytest.raises(PhysicsError, match=r"scenario\.chip\(id\)"):
        estimate(m, "h100-sxm", 1, "bf16", 10, 10)  # type: ignore[arg-type]
    with pytest.raises(PhysicsError, match="Accelerator"):
        goodput_table([m], ["h100-sxm"])  # type: ignore[list-item]


def test_tensor_parallel_pays_communication() -> None:
    m70, h200 = SC.model("llama-3.1-70b"), SC.chip("h200-sxm")
    one = estimate(m70, h200, 1, "fp8", 1000, 1000)
    eight = estimate(m70, h200, 8, "fp8", 1000, 1000)
    assert one.step_comm_s == 0.0 and eight.step_comm_s > 0.0
    pcie = estimate(m70, SC.chip("l20"), 4, "fp8", 1000, 1000)
    assert pcie.fits and pcie.step_comm_s > eight.step_comm_s
    island = h200.model_copy(update={"interconnect_gbps": 0.0})
    m8 = SC.model("qwen3-8b")
    assert "no scale-up interconnect" in (estimate(m8, island, 2, "fp8", 100, 100).reason or "")
    assert estimate(m8, island, 1, "fp8", 100, 100).ok


def test_every_catalog_pair_gives_figures_or_reason() -> None:
    for model in SC.models:
        for chip in SC.accelerators:
            for chips in (1, 8):
                for precision in ("bf16", "fp8", "fp4", "int8"):
                    r = estimate(model, chip, chips, precision, 2000, 500, *SCENARIOS["server"])
                    json.dumps(r.to_json(), allow_nan=False)
                    if r.ok:
                        assert r.output_tokens_per_s_per_chip > 0 and r.batch >= 1 and r.reason is None
                        assert r.tpot_s <= 0.2 and r.ttft_s <= 2.0
                        assert r.bound in ("compute", "memory", "communication", "moe-dispatch", "overhead")
                        assert r.step_moe_dispatch_s >= 0.0
                        assert (r.step_moe_dispatch_s > 0.0) == model.is_moe
                    else:
                        assert r.reason and r.output_tokens_per_s_per_chip == 0


def test_goodput_table_covers_catalog() -> None:
    table = goodput_table(SC.models, SC.accelerators)
    assert table.dims == ("model", "chip", "case") and table.shape == (12, 11, 3)
    assert list(table.model.values) == [m.id for m in SC.models]
    assert list(table.chip.values) == [c.id for c in SC.accelerators]
    assert list(table.case.values) == [w.name for w in DEFAULT_CASES]
    assert np.all(np.isnan(table.sel(chip="hanguang-800").values))
    assert float(table.sel(model="llama-3.1-405b", chip="h100-sxm", case="offline")) > 0
    assert int(table.tp.sel(model="llama-3.1-405b", chip="h100-sxm", case="offline")) == 8
    assert table.precision.sel(model="llama-3.1-70b", chip="a100-80gb-sxm", case="offline").item() == "bf16"
    offline = table.sel(case="offline").values
    for case in ("server", "interactive"):
        tighter = table.sel(case=case).values
        ok = ~np.isnan(offline)
        assert np.all(tighter[ok] <= offline[ok] + 1e-9)


def test_goodput_table_cells_are_the_best_degree_of_estimate() -> None:
    """Every cell, its ``tp`` and its ``precision`` equal what estimate() gives at the best TP degree."""
    table = goodput_table(SC.models, SC.accelerators)
    counts = {"served": 0, "slo-missed": 0, "cannot-run": 0}
    for model in SC.models:
        for chip in SC.accelerators:
            prec = next((p for p in ("fp8", "bf16", "fp16", "int8") if chip.supports(p)), None)
            for w in DEFAULT_CASES:
                cell = table.sel(model=model.id, chip=chip.id, case=w.name)
                value, tp, precision = float(cell), int(cell.tp), str(cell.precision.item())
                if prec is None:
                    assert np.isnan(value) and tp == 0 and precision == ""
                    counts["cannot-run"] += 1
                    continue
                shape = (w.input_tokens, w.output_tokens, w.ttft_slo_s, w.tpot_slo_s)
                each = [estimate(model, chip, n, prec, *shape) for n in TP_DEGREES]
                best = best_estimate(model, chip, prec, *shape)
                if best.ok:
                    assert value == pytest.approx(best.output_tokens_per_s_per_chip, rel=1e-12)
                    assert (tp, precision) == (best.tp, prec) and value > 0
                    assert value >= max(r.output_tokens_per_s_per_chip for r in each)
                    counts["served"] += 1
                elif any(r.fits for r in each):
                    assert (value, tp, precision) == (0.0, 0, prec)
                    counts["slo-missed"] += 1
                else:
                    assert np.isnan(value) and tp == 0 and precision == ""
                    counts["cannot-run"] += 1
    assert all(counts.values()), counts  # every kind of cell occurs in the catalog


def test_goodput_table_takes_cases_by_name_and_any_degrees() -> None:
    models, chips = [SC.model("qwen3-32b"), SC.model("llama-3.1-70b")], [SC.chip("h200-sxm")]
    cases = {"long": Workload("long", 4000, 500, *SCENARIOS["server"]), "chat": Workload("chat", 1000, 1000)}
    table = goodput_table(models, chips, ("bf16",), cases, tp_degrees=(2, 8))
    assert list(table.case.values) == ["long", "chat"] and table.shape == (2, 1, 2)
    assert set(np.unique(table.tp.values)) <= {0, 2, 8}
    assert np.all(table.precision.values == "bf16")
    best = best_estimate(models[1], chips[0], "bf16", 4000, 500, *SCENARIOS["server"], tp_degrees=(2, 8))
    cell = table.sel(model="llama-3.1-70b", chip="h200-sxm", case="long")
    assert float(cell) == pytest.approx(best.output_tokens_per_s_per_chip, rel=1e-12) and int(cell.tp) == best.tp


slo = st.one_of(st.none(), st.floats(min_value=0.01, max_value=10.0))


@settings(max_examples=40, deadline=None)
@given(
    model=st.sampled_from(["llama-3.1-70b", "qwen3-30b-a3b", "qwen3-8b", "deepseek-v3", "mixtral-8x7b"]),
    chip=st.sampled_from(["h100-sxm", "h200-sxm", "b200", "mi300x", "ascend-910b", "h20"]),
    chips=st.sampled_from([1, 2, 4, 8]),
    inp=st.integers(min_value=1, max_value=8000),
    out=st.integers(min_value=1, max_value=4000),
    ttft=slo,
    tpot=slo,
    loosen=st.floats(min_value=1.0, max_value=10.0),
)
def test_goodput_never_drops_as_slos_loosen(
    model: str,
    chip: str,
    chips: int,
    inp: int,
    out: int,
    ttft: float | None,
    tpot: float | None,
    loosen: float,
) -> None:
    m, c = SC.model(model), SC.chip(chip)
    precision = "fp8" if c.supports("fp8") else "bf16"
    tight = estimate(m, c, chips, precision, inp, out, ttft, tpot)
    loose = estimate(
        m,
        c,
        chips,
        precision,
        inp,
        out,
        None if ttft is None else ttft * loosen,
        None if tpot is None else tpot * loosen,
    )
    free = estimate(m, c, chips, precision, inp, out)
    assert loose.output_tokens_per_s_per_chip >= tight.output_tokens_per_s_per_chip
    assert free.output_tokens_per_s_per_chip >= loose.output_tokens_per_s_per_chip


@settings(max_examples=40, deadline=None)
@given(
    model=st.sampled_from(["llama-3.1-70b", "qwen3-235b-a22b", "qwen3-8b", "mixtral-8x7b"]),
    chips=st.sampled_from([1, 2, 4, 8]),
    inp=st.integers(min_value=1, max_value=8000),
    out=st.integers(min_value=1, max_value=4000),
    factor=st.floats(min_value=1.0, max_value=4.0),
    tpot=slo,
)
def test_more_bandwidth_never_lowers_throughput(
    model: str, chips: int, inp: int, out: int, factor: float, tpot: float | None
) -> None:
    m = SC.model(model)
    chip = SC.chip("h200-sxm")
    fast = chip.model_copy(update={"mem_bw_tbps": (chip.mem_bw_tbps or 0.0) * factor})
    base = estimate(m, chip, chips, "fp8", inp, out, None, tpot)
    more = estimate(m, fast, chips, "fp8", inp, out, None, tpot)
    assert more.output_tokens_per_s_per_chip >= base.output_tokens_per_s_per_chip * (1 - 1e-12)
    if base.ok:
        assert more.tpot_s <= base.tpot_s * (1 + 1e-12) or more.batch > base.batch


def test_json_carries_tp_and_replicas_and_every_field() -> None:
    one = estimate(SC.model("llama-3.1-70b"), SC.chip("h200-sxm"), 4, "fp8", 1000, 1000).to_json()
    fields = {
        "model", "chip", "chips", "precision", "kv_precision", "input_tokens", "output_tokens", "ttft_slo_s",
        "tpot_slo_s", "fits", "meets_slo", "reason", "batch", "max_batch", "ttft_s", "tpot_s",
        "prefill_tokens_per_s", "decode_tokens_per_s", "output_tokens_per_s_per_chip", "bound", "weight_gb",
        "kv_gb_per_sequence", "kv_budget_gb", "step_compute_s", "step_memory_s", "step_comm_s",
        "step_overhead_s", "step_moe_dispatch_s", "ok", "tp", "replicas",
    }
    assert fields == set(one)
    assert (one["tp"], one["replicas"], one["chips"]) == (4, 1, 4)
    json.dumps(one, allow_nan=False)


def test_named_scenarios() -> None:
    assert SCENARIOS["offline"] == (None, None) == SCENARIOS["max-throughput"]
    assert SCENARIOS["server"] == (2.0, 0.2) and SCENARIOS["interactive"] == (0.45, 0.04)
    with pytest.raises(PhysicsError):
        goodput_table(SC.models, SC.accelerators, cases=[Workload("bad", 0, 10)])
