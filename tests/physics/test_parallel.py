"""Physics pins of the parallel split of a system of chips (sovcloud.physics.parallel)."""

from __future__ import annotations

import json

import pytest

from sovcloud.errors import PhysicsError
from sovcloud.physics.parallel import best_estimate, best_split, split_degrees
from sovcloud.physics.perf import SCENARIOS, estimate
from tests.physics.catalog import SC


def test_split_degrees_are_powers_of_two_dividing_the_chips_and_the_chips() -> None:
    assert split_degrees(1) == (1,)
    assert split_degrees(8) == (1, 2, 4, 8)
    assert split_degrees(6) == (1, 2, 6)
    assert split_degrees(12) == (1, 2, 4, 12)
    assert split_degrees(3) == (1, 3)
    with pytest.raises(PhysicsError):
        split_degrees(0)


def test_best_estimate_needs_a_degree_and_falls_back_to_the_largest() -> None:
    m, c = SC.model("llama-3.1-405b"), SC.chip("h100-sxm")
    with pytest.raises(PhysicsError):
        best_estimate(m, c, "bf16", 1000, 1000, tp_degrees=())
    none_fit = best_estimate(m, c, "bf16", 1000, 1000, tp_degrees=(2, 1))
    assert not none_fit.fits and none_fit.tp == 2
    assert none_fit.to_json() == estimate(m, c, 2, "bf16", 1000, 1000).to_json()  # NaN latencies: compare as JSON


@pytest.mark.parametrize(
    ("model", "chip", "chips", "precision", "scenario"),
    [
        ("llama-2-70b", "h100-sxm", 8, "fp8", "offline"),
        ("llama-3.1-70b", "h200-sxm", 8, "fp8", "interactive"),
        ("llama-3.1-405b", "h100-sxm", 8, "fp8", "server"),
        ("qwen3-8b", "a100-80gb-sxm", 6, "bf16", "interactive"),
        ("qwen3-235b-a22b", "b200", 4, "fp4", "server"),
        ("deepseek-v3", "h200-sxm", 8, "fp8", "offline"),
        ("qwen3-32b", "l20", 4, "fp8", "server"),
        ("qwen3-30b-a3b", "hanguang-800", 2, "int8", "offline"),
    ],
)
def test_best_split_is_never_worse_than_one_group_of_all_chips(
    model: str, chip: str, chips: int, precision: str, scenario: str
) -> None:
    m, c = SC.model(model), SC.chip(chip)
    slo = SCENARIOS[scenario]
    split = best_split(m, c, chips, precision, 1000, 500, *slo)
    whole = estimate(m, c, chips, precision, 1000, 500, *slo)
    assert split.chips == chips == split.tp * split.replicas and split.tp in split_degrees(chips)
    assert split.output_tokens_per_s_per_chip >= whole.output_tokens_per_s_per_chip
    assert split.ok or not whole.ok
    if not split.ok:  # nothing works: the all-chips group with its reason, one replica
        assert split.tp == chips and split.replicas == 1 and split.reason == whole.reason
        return
    group = estimate(m, c, split.tp, precision, 1000, 500, *slo)
    assert split.output_tokens_per_s_per_chip == group.output_tokens_per_s_per_chip
    assert split.batch == group.batch and split.tpot_s == group.tpot_s
    assert split.decode_tokens_per_s == pytest.approx(group.decode_tokens_per_s * split.replicas, rel=1e-12)
    assert split.decode_tokens_per_s == pytest.approx(split.output_tokens_per_s_per_chip * chips, rel=1e-12)
    for tp in split_degrees(chips):  # no other degree does better
        other = estimate(m, c, tp, precision, 1000, 500, *slo)
        assert other.output_tokens_per_s_per_chip <= split.output_tokens_per_s_per_chip * (1 + 1e-12)


def test_best_split_picks_the_published_mlperf_llama2_deployments() -> None:
    # NVIDIA MLPerf Inference v4.1 llama2-70b FP8 (mlcommons/inference_results_v4.1,
    # closed/NVIDIA/configs/llama2-70b/Offline): TP2 x 4 on 8 x H100-SXM-80GB, TP1 x 8 on 8 x H200-SXM-141GB
    llama2, h100_sxm, h200_sxm = SC.model("llama-2-70b"), SC.chip("h100-sxm"), SC.chip("h200-sxm")
    h100 = best_split(llama2, h100_sxm, 8, "fp8", 700, 290)
    h200 = best_split(llama2, h200_sxm, 8, "fp8", 700, 290, *SCENARIOS["server"])
    assert (h100.tp, h100.replicas) == (2, 4) and (h200.tp, h200.replicas) == (1, 8)
    # one TP8 group would give far less per chip (all-reduces over 8 chips, 8x the weight reads per token)
    one_group = estimate(llama2, h200_sxm, 8, "fp8", 700, 290, *SCENARIOS["server"])
    assert h200.output_tokens_per_s_per_chip > 1.5 * one_group.output_tokens_per_s_per_chip
    # llama-2-70b in fp8 (69 GB) does not fit one H100 with KV room, so TP1 is not chosen there
    assert not estimate(llama2, h100_sxm, 1, "fp8", 700, 290).fits or h100.tp == 2


def test_best_split_keeps_the_bandwidth_physics() -> None:
    # memory-bound decode (batch 1 at a TPOT no batch meets): doubling the bandwidth halves the memory part
    m = SC.model("llama-3.1-405b")
    chip = SC.chip("h200-sxm")
    fast = chip.model_copy(update={"mem_bw_tbps": 2 * (chip.mem_bw_tbps or 0.0)})
    slow = best_split(m, chip, 8, "fp8", 128, 128, tpot_slo_s=1e-6)
    quick = best_split(m, fast, 8, "fp8", 128, 128, tpot_slo_s=1e-6)
    assert slow.bound == "memory" and slow.tp == quick.tp == 8 and not slow.meets_slo
    assert quick.step_memory_s == pytest.approx(slow.step_memory_s / 2, rel=1e-12)
    assert quick.tpot_s == pytest.approx(slow.tpot_s - slow.step_memory_s / 2, rel=1e-9)


def test_split_json_has_the_fields_of_one_group() -> None:
    m, c = SC.model("llama-3.1-70b"), SC.chip("h200-sxm")
    one = estimate(m, c, 4, "fp8", 1000, 1000).to_json()
    split = best_split(m, c, 8, "fp8", 1000, 1000).to_json()
    assert set(split) == set(one)
    assert split["chips"] == 8 and split["tp"] * split["replicas"] == 8
    json.dumps(split, allow_nan=False)
