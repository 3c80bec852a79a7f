"""Physics pins of the roofline step time: bandwidth, tensor parallelism and mixture-of-experts terms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sovcloud.physics.families import FAMILY_CONSTANTS
from sovcloud.physics.perf import estimate
from sovcloud.physics.roofline import (
    deployment,
    expected_distinct_experts,
    expert_read_bytes,
    gemm_time,
    geometry,
    moe_dispatch_time,
    prefill_time,
    step_times,
    weight_read_bytes,
)
from tests.physics.catalog import SC


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [("llama-3.1-70b", 327680), ("qwen3-235b-a22b", 192512), ("deepseek-v3", 70272), ("qwen3-32b", 262144)],
)
def test_kv_bytes_per_token_match_model_cards(model_id: str, expected: int) -> None:
    assert SC.model(model_id).kv_bytes_per_token("bf16") == expected


def test_doubled_bandwidth_halves_memory_bound_decode_time() -> None:
    model = SC.model("llama-3.1-70b")
    chip = SC.chip("h100-sxm")
    fast = chip.model_copy(update={"mem_bw_tbps": 2 * (chip.mem_bw_tbps or 0.0)})
    g = geometry(model)
    batch = np.array([1.0, 4.0])
    slow_t = step_times(g, deployment(chip, 2, "fp8"), batch, 128, 128)
    fast_t = step_times(g, deployment(fast, 2, "fp8"), batch, 128, 128)
    assert np.all(slow_t.memory > slow_t.compute)  # decode at small batch is memory-bound
    np.testing.assert_allclose(fast_t.memory, slow_t.memory / 2, rtol=1e-12)
    np.testing.assert_allclose(fast_t.compute, slow_t.compute, rtol=1e-12)
    slow_var = slow_t.step - slow_t.overhead - slow_t.comm - slow_t.compute
    fast_var = fast_t.step - fast_t.overhead - fast_t.comm - fast_t.compute
    np.testing.assert_allclose(fast_var, slow_var / 2, rtol=1e-12)
    # and through the public API: the best-latency (batch-1) TPOT drops by the memory half
    tight = estimate(model, chip, 2, "fp8", 128, 128, tpot_slo_s=1e-6)
    tight_fast = estimate(model, fast, 2, "fp8", 128, 128, tpot_slo_s=1e-6)
    assert not tight.meets_slo and tight.bound == "memory"
    assert tight_fast.tpot_s == pytest.approx(tight.tpot_s - tight.step_memory_s / 2, rel=1e-9)


def test_moe_expert_reads_grow_with_batch_and_saturate() -> None:
    tokens = np.array([1.0, 2.0, 8.0, 64.0, 512.0, 8192.0])
    distinct = expected_distinct_experts(128, 8, tokens)
    assert distinct[0] == pytest.approx(8.0)
    assert np.all(np.diff(distinct) > 0) and distinct[-1] == pytest.approx(128.0)
    assert np.all(distinct <= 128.0)
    model = SC.model("qwen3-235b-a22b")
    g = geometry(model)
    d = deployment(SC.chip("h200-sxm"), 8, "fp8")
    reads = weight_read_bytes(g, d, tokens)
    assert np.all(np.diff(reads) > 0)
    assert reads[-1] == pytest.approx(model.weight_bytes("fp8"), rel=1e-9)  # all experts resident and read
    one_token = g.nonexpert_params + g.moe_layers * g.expert_params * 8
    assert reads[0] == pytest.approx(one_token, rel=1e-9)
    assert one_token == pytest.approx(model.active_params, rel=0.03)  # matches the card's active params
    dense = weight_read_bytes(geometry(SC.model("qwen3-32b")), d, tokens)
    assert np.all(dense == dense[0])


def test_moe_dispatch_term_is_exactly_the_modelled_cost() -> None:
    g = geometry(SC.model("qwen3-235b-a22b"))
    batch = np.arange(1.0, 65.0)
    for chips in (1, 8):
        with_term = deployment(SC.chip("h200-sxm"), chips, "fp8")
        without = deployment(SC.chip("h200-sxm"), chips, "fp8", with_term.consts.with_moe(0.0))
        a = step_times(g, with_term, batch, 1000, 100)
        b = step_times(g, without, batch, 1000, 100)
        tokens = batch * (1.0 + 1000 / 100)
        modelled = tokens * 8 * 94 * with_term.consts.moe_pair_s / chips  # T*k*L_moe*c_pair/n
        np.testing.assert_allclose(a.step - b.step, modelled, rtol=1e-9)
        np.testing.assert_allclose(a.moe_dispatch, modelled, rtol=1e-12)
        assert np.all(b.moe_dispatch == 0.0)
        pre = prefill_time(g, with_term, 1000) - prefill_time(g, without, 1000)
        assert pre == pytest.approx(1000 * 8 * 94 * with_term.consts.moe_pair_s / chips, rel=1e-9)


def test_moe_decode_is_slower_than_its_dense_equivalent_by_the_modelled_terms() -> None:
    """A dense model with the MoE's active parameters reads P_act per step; the MoE reads every touched
    expert and pays the dispatch of its routed pairs: at small batch the step differs by exactly that."""
    g = geometry(SC.model("qwen3-30b-a3b"))
    dense_eq = dataclasses.replace(
        g,
        total_params=g.active_params,
        nonexpert_params=g.active_params,
        routed_active_params=0.0,
        experts=0,
        experts_per_token=0,
        moe_layers=0,
    )
    d = deployment(SC.chip("b200"), 1, "fp4")
    batch = np.array([1.0, 2.0, 4.0, 8.0])
    moe = step_times(g, d, batch, 1000, 1000)
    dense = step_times(dense_eq, d, batch, 1000, 1000)
    tokens = batch * 2.0
    bw = d.mem_bw * d.consts.bw_eff
    extra_reads = (weight_read_bytes(g, d, tokens) - g.active_params * d.weight_bytes_per_param) / bw
    dispatch = tokens * 8 * 48 * d.consts.moe_pair_s
    assert np.all(moe.memory > moe.compute)  # small-batch decode is memory-bound
    np.testing.assert_allclose(moe.step - dense.step, extra_reads + dispatch, rtol=1e-9)
    assert np.all(moe.step > dense.step) and np.all(dispatch > 0)
    assert np.all(expert_read_bytes(g, d, tokens) >= g.routed_active_params * d.weight_bytes_per_param * 0.999)
    assert np.all(dense.moe_dispatch == 0.0)


def test_expert_gemm_efficiency_rises_with_tokens_per_expert() -> None:
    """Useful expert FLOP rate = 2*P_routed*T / (expert GEMM + dispatch time): rises monotonically with the
    tokens per expert (weight reads amortised) towards the ceiling 2*P_r / (2*P_r/F + k*L_moe*c_pair/n)."""
    g = geometry(SC.model("qwen3-30b-a3b"))
    d = deployment(SC.chip("b200"), 1, "fp4")
    tokens = np.geomspace(1.0, 65536.0, 200)
    non_routed = dataclasses.replace(  # only the non-routed GEMM kernel
        g, active_params=g.active_params - g.routed_active_params, routed_active_params=0.0, experts=0
    )
    c_all, m_all = gemm_time(g, d, tokens)
    c_ne, m_ne = gemm_time(non_routed, d, tokens)
    expert_time = (c_all + m_all) - (c_ne + m_ne) + moe_dispatch_time(g, d, tokens)
    rate = 2.0 * g.routed_active_params * tokens / expert_time
    per_expert = tokens * g.experts_per_token / expected_distinct_experts(g.experts, g.experts_per_token, tokens)
    assert np.all(np.diff(per_expert) > 0)
    assert np.all(np.diff(rate) >= -1e-9 * rate[:-1]) and rate[-1] > 10 * rate[0]  # non-decreasing
    f = d.gemm_flops * d.consts.compute_eff
    ceiling = 2.0 * g.routed_active_params / (
        2.0 * g.routed_active_params / f + g.experts_per_token * g.moe_layers * d.consts.moe_pair_s
    )
    assert np.all(rate <= ceiling * (1 + 1e-12)) and rate[-1] == pytest.approx(ceiling, rel=1e-9)
    assert ceiling < 0.5 * f  # fine-grained experts run well below the dense GEMM rate


def test_dense_models_are_unaffected_by_the_moe_constant() -> None:
    consts = FAMILY_CONSTANTS["nvidia-hopper"]
    h200 = SC.chip("h200-sxm")
    for model in ("llama-3.1-70b", "qwen3-32b", "llama-3.1-405b"):
        a = estimate(SC.model(model), h200, 8, "fp8", 1000, 1000, constants=consts.with_moe(0.0))
        b = estimate(SC.model(model), h200, 8, "fp8", 1000, 1000, constants=consts.with_moe(1e-6))
        assert a == b and a.step_moe_dispatch_s == 0.0
    g = geometry(SC.model("llama-3.1-70b"))
    assert g.routed_active_params == 0.0
    d = deployment(h200, 1, "fp8")
    tokens = np.array([1.0, 100.0, 10000.0])
    compute, memory = gemm_time(g, d, tokens)
    flops = d.gemm_flops * d.consts.compute_eff
    roof = np.maximum(2 * g.active_params * tokens / flops, weight_read_bytes(g, d, tokens) / (d.mem_bw * 0.9))
    np.testing.assert_allclose(compute + memory, roof, rtol=1e-12)  # one roofline, as before the split


def test_unknown_family_falls_back_to_hopper_constants() -> None:
    hopper = FAMILY_CONSTANTS["nvidia-hopper"]
    other = deployment(SC.chip("h200-sxm").model_copy(update={"family": "no-such-family"}), 1, "fp8").consts
    assert other.family == "no-such-family" and "unknown family" in other.basis
    assert dataclasses.replace(other, family=hopper.family, basis=hopper.basis) == hopper
