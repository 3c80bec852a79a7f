"""Physics pins of the inference performance model (sovcloud.perf, roofline, perf_omni, perf_calibrate)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sovcloud.cli_perf import perf_command
from sovcloud.errors import PhysicsError, UnknownEntity
from sovcloud.perf import SCENARIOS, Workload, best_estimate, estimate, goodput_table
from sovcloud.perf_calibrate import (
    MAX_UTILISATION,
    calibrate,
    evaluate_cases,
    implied_utilisation,
    load_calibration_cases,
)
from sovcloud.perf_omni import omni_costs
from sovcloud.roofline import (
    FAMILY_CONSTANTS,
    deployment,
    expected_distinct_experts,
    geometry,
    step_times,
    weight_read_bytes,
)
from sovcloud.scenario import load_scenario

SC = load_scenario()


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


def test_hanguang_cannot_host_a_30b_model() -> None:
    r = estimate("qwen3-omni-30b-a3b", "hanguang-800", 1, "int8", 1000, 200)
    assert not r.fits and not r.ok and r.batch == 0 and r.output_tokens_per_s_per_chip == 0
    assert (
        r.reason is not None
        and "192 MB" in r.reason
        and "30.5 GB" in r.reason
        and "no device DRAM" in r.reason
    )


def test_405b_bf16_does_not_fit_one_h100() -> None:
    r = estimate("llama-3.1-405b", "h100-sxm", 1, "bf16", 1000, 1000)
    assert not r.fits
    assert (
        r.reason is not None and "811.8 GB of bf16 weights" in r.reason and "72.0 GB are usable" in r.reason
    )
    assert estimate("llama-3.1-405b", "h200-sxm", 8, "fp8", 1000, 1000).fits


def test_unsupported_precision_gives_reason() -> None:
    r = estimate("llama-3.1-70b", "a100-80gb-sxm", 4, "fp8", 1000, 1000)
    assert not r.fits
    assert r.reason == "a100-80gb-sxm has no fp8 tensor cores; supported: bf16, fp16, int8"
    assert "no fp4" in (estimate("qwen3-8b", "h100-sxm", 1, "fp4", 100, 100).reason or "")


def test_invalid_inputs_raise() -> None:
    with pytest.raises(PhysicsError):
        estimate("qwen3-8b", "h100-sxm", 1, "bf16", 0, 10)
    with pytest.raises(PhysicsError):
        estimate("qwen3-8b", "h100-sxm", 0, "bf16", 10, 10)
    with pytest.raises(PhysicsError):
        estimate("qwen3-8b", "h100-sxm", 1, "bf16", 10, 10, ttft_slo_s=-1.0)
    with pytest.raises(PhysicsError):
        estimate("qwen3-8b", "h100-sxm", 1, "fp3", 10, 10)
    with pytest.raises(UnknownEntity):
        estimate("qwen3-8b", "tpu-v9", 1, "bf16", 10, 10)


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


def test_tensor_parallel_pays_communication() -> None:
    one = estimate("llama-3.1-70b", "h200-sxm", 1, "fp8", 1000, 1000)
    eight = estimate("llama-3.1-70b", "h200-sxm", 8, "fp8", 1000, 1000)
    assert one.step_comm_s == 0.0 and eight.step_comm_s > 0.0
    pcie = estimate("llama-3.1-70b", "l20", 4, "fp8", 1000, 1000)
    assert pcie.fits and pcie.step_comm_s > eight.step_comm_s
    island = SC.chip("h200-sxm").model_copy(update={"interconnect_gbps": 0.0})
    assert "no scale-up interconnect" in (estimate("qwen3-8b", island, 2, "fp8", 100, 100).reason or "")
    assert estimate("qwen3-8b", island, 1, "fp8", 100, 100).ok


def test_calibration_bands_on_published_measurements() -> None:
    cases = load_calibration_cases()
    report = evaluate_cases(cases)
    assert len(report.rows) == len(cases) == 8
    assert len(report.admitted) >= 5
    assert report.median_abs_error <= 0.20
    assert report.max_abs_error <= 0.40
    # the screen holds out exactly the impossible shapes and the cases sharing them
    bad = {
        (c.model, c.input_tokens, c.output_tokens) for c in cases if implied_utilisation(c) > MAX_UTILISATION
    }
    for case, row in zip(cases, report.rows, strict=True):
        assert row.admitted == ((case.model, case.input_tokens, case.output_tokens) not in bad)


def test_calibrate_reproduces_family_table() -> None:
    report = calibrate(load_calibration_cases())
    fitted = report.constants["nvidia-hopper"]
    table = FAMILY_CONSTANTS["nvidia-hopper"]
    assert fitted.compute_eff == pytest.approx(table.compute_eff, abs=0.02)
    assert fitted.bw_eff == pytest.approx(table.bw_eff, abs=0.03)
    assert fitted.step_overhead_s == pytest.approx(table.step_overhead_s, abs=1e-3)
    assert report.median_abs_error <= 0.20 and report.max_abs_error <= 0.40


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
                        assert r.bound in ("compute", "memory", "communication", "overhead")
                    else:
                        assert r.reason and r.output_tokens_per_s_per_chip == 0


def test_goodput_table_covers_catalog_fast() -> None:
    goodput_table()  # warm caches
    t0 = time.perf_counter()
    table = goodput_table()
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    assert table.dims == ("model", "chip", "case") and table.shape == (12, 11, 3)
    assert np.all(np.isnan(table.sel(chip="hanguang-800").values))
    assert float(table.sel(model="llama-3.1-405b", chip="h100-sxm", case="offline")) > 0
    assert int(table.tp.sel(model="llama-3.1-405b", chip="h100-sxm", case="offline")) == 8
    assert table.precision.sel(model="llama-3.1-70b", chip="a100-80gb-sxm", case="offline").item() == "bf16"
    # the table is the best TP degree of estimate()
    best = best_estimate("qwen3-32b", "h200-sxm", "fp8", 1000, 1000, *SCENARIOS["interactive"])
    cell = float(table.sel(model="qwen3-32b", chip="h200-sxm", case="interactive"))
    assert cell == pytest.approx(best.output_tokens_per_s_per_chip, rel=1e-9)
    offline = table.sel(case="offline").values
    for case in ("server", "interactive"):
        tighter = table.sel(case=case).values
        ok = ~np.isnan(offline)
        assert np.all(tighter[ok] <= offline[ok] + 1e-9)


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
    precision = "fp8" if SC.chip(chip).supports("fp8") else "bf16"
    tight = estimate(model, chip, chips, precision, inp, out, ttft, tpot)
    loose = estimate(
        model,
        chip,
        chips,
        precision,
        inp,
        out,
        None if ttft is None else ttft * loosen,
        None if tpot is None else tpot * loosen,
    )
    free = estimate(model, chip, chips, precision, inp, out)
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
    chip = SC.chip("h200-sxm")
    fast = chip.model_copy(update={"mem_bw_tbps": (chip.mem_bw_tbps or 0.0) * factor})
    base = estimate(model, chip, chips, "fp8", inp, out, None, tpot)
    more = estimate(model, fast, chips, "fp8", inp, out, None, tpot)
    assert more.output_tokens_per_s_per_chip >= base.output_tokens_per_s_per_chip * (1 - 1e-12)
    if base.ok:
        assert more.tpot_s <= base.tpot_s * (1 + 1e-12) or more.batch > base.batch


def test_omni_costs_plan_realtime_voice() -> None:
    c = omni_costs("qwen3-omni-30b-a3b", "h100-sxm", 1, "fp8")
    assert c.ok and c.reason is None
    assert c.audio_tokens_per_s == 12.5 and c.image_tokens == 256 and c.video_tokens_per_frame == 64
    assert 0 < c.audio_encoder_chip_s_per_audio_s < c.audio_prefill_chip_s_per_audio_s
    per_image = 256 / 12.5 * c.audio_encoder_chip_s_per_audio_s * 540 / 650  # 2*P*tokens scaling
    assert c.image_encoder_chip_s_per_image == pytest.approx(per_image)
    assert 0 < c.realtime_factor < 1 and c.realtime_streams >= 1
    assert c.speech_chip_s_per_speech_s == pytest.approx(1 / c.realtime_streams)
    slower = omni_costs("qwen3-omni-30b-a3b", "h20", 1, "fp8")
    assert slower.audio_encoder_chip_s_per_audio_s > c.audio_encoder_chip_s_per_audio_s
    json.dumps(c.to_json(), allow_nan=False)
    assert "not an omni model" in (omni_costs("llama-2-70b", "h100-sxm", 1, "fp8").reason or "")
    nope = omni_costs("qwen3-omni-30b-a3b", "hanguang-800", 1, "int8")
    assert not nope.ok and "no device DRAM" in (nope.reason or "")
    assert math.isnan(nope.realtime_factor)


def test_named_scenarios() -> None:
    assert SCENARIOS["offline"] == (None, None) == SCENARIOS["max-throughput"]
    assert SCENARIOS["server"] == (2.0, 0.2) and SCENARIOS["interactive"] == (0.45, 0.04)
    with pytest.raises(PhysicsError):
        goodput_table(cases=[Workload("bad", 0, 10)])


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("perf")(perf_command)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer in multi-command mode
        """Nothing."""

    return app


def test_cli_json_output() -> None:
    args = ["perf", "--model", "llama-3.1-70b", "--chip", "h200-sxm", "--chips", "1", "--precision", "fp8"]
    result = CliRunner().invoke(_app(), [*args, "--input", "1000", "--output", "1000", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = estimate("llama-3.1-70b", "h200-sxm", 1, "fp8", 1000, 1000)
    for key in ("fits", "batch", "ttft_s", "tpot_s", "bound", "output_tokens_per_s_per_chip", "reason"):
        assert key in data
    assert data["fits"] is True and data["reason"] is None
    assert data["output_tokens_per_s_per_chip"] == pytest.approx(expected.output_tokens_per_s_per_chip)
    inter = CliRunner().invoke(
        _app(), [*args, "--input", "1000", "--output", "1000", "--scenario", "interactive", "--json"]
    )
    assert json.loads(inter.output)["tpot_s"] <= 0.04
    refused = CliRunner().invoke(
        _app(),
        [
            "perf",
            "--model",
            "llama-3.1-70b",
            "--chip",
            "a100-80gb-sxm",
            "--precision",
            "fp8",
            "--input",
            "10",
            "--output",
            "10",
            "--json",
        ],
    )
    assert refused.exit_code == 0 and json.loads(refused.output)["fits"] is False
    table = CliRunner().invoke(_app(), [*args, "--input", "100", "--output", "100"])
    assert table.exit_code == 0 and "output tokens/s/chip" in table.output


def test_cli_errors_are_sovcloud_errors() -> None:
    bad_chip = CliRunner().invoke(
        _app(), ["perf", "--model", "qwen3-8b", "--chip", "nope", "--input", "1", "--output", "1"]
    )
    assert isinstance(bad_chip.exception, UnknownEntity)
    bad_scenario = CliRunner().invoke(
        _app(),
        [
            "perf",
            "--model",
            "qwen3-8b",
            "--chip",
            "h100-sxm",
            "--input",
            "1",
            "--output",
            "1",
            "--scenario",
            "x",
        ],
    )
    assert isinstance(bad_scenario.exception, PhysicsError)
