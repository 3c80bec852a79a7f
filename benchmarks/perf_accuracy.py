"""Accuracy of the inference performance model against published measurements.

Run: ``python benchmarks/perf_accuracy.py``

1. The calibration CSV (``sovcloud/data/validation/perf_calibration.csv``): predicted vs measured
   output tokens/s per chip with the tabled family constants, the consistency screen, and the
   median / largest absolute error over the admitted cases and over all rows; for the rows the
   screen holds out, the mean input length at which the fitted model reproduces them.
   Then the evidence on the three MLPerf llama-2-70b rows: the deployment the model picks against
   NVIDIA's published v4.1 configuration, the mean input their published engine batch allows, and
   a sweep of one Hopper compute efficiency over all 8 rows.
2. ``calibrate()`` and ``calibrate_moe()`` re-fitted from scratch, to show they reproduce the
   tabled constants; the MoE calibration rows (``perf_moe_calibration.csv``) with their errors.
3. Held-out published figures that were NOT used for fitting: every figure of the TensorRT-LLM
   performance overview (v1.0) for catalog models on catalog chips, less the MoE calibration rows.
4. Wall time of ``goodput_table()`` for the full catalog.

Models and chips are those of the bundled default scenario, loaded once (:data:`CATALOG`).
"""

from __future__ import annotations

import time

import numpy as np

from sovcloud.physics.calibrate import (
    MAX_UTILISATION,
    CalibrationCase,
    calibrate,
    calibrate_moe,
    evaluate_cases,
    load_calibration_cases,
    load_moe_calibration_cases,
)
from sovcloud.physics.families import FAMILY_CONSTANTS
from sovcloud.physics.parallel import best_split
from sovcloud.physics.perf import estimate, goodput_table
from sovcloud.physics.roofline import geometry
from sovcloud.scenario.loader import load_scenario

#: The catalog every id below resolves in: the bundled default scenario.
CATALOG = load_scenario()

#: Source of the held-out figures (total output tokens/s of one TP group, trtllm-bench max throughput).
HELD_OUT_SOURCE = (
    "NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md (v1.0 tables, PyTorch backend; "
    "https://github.com/NVIDIA/TensorRT-LLM/blob/main/docs/source/performance/perf-overview.md)"
)
SHAPES: tuple[tuple[int, int], ...] = (
    (128, 128), (128, 2048), (128, 4096), (500, 2000), (1000, 1000),
    (1000, 2000), (2048, 128), (2048, 2048), (5000, 500), (20000, 2000),
)
#: (model, chip, precision, TP) -> total output tok/s per shape of ``SHAPES`` (None: not published).
TABLES: dict[tuple[str, str, str, int], tuple[float | None, ...]] = {
    ("llama-3.3-70b", "b200", "fp4", 1): (11147, 9922, 6831, 7762, 7007, 6271, 1339, 4783, 1459, 665),
    ("llama-3.3-70b", "h200-sxm", "fp8", 1): (3803, 4336, 2872, 3666, 2909, 2994, 442, 2003, 566, 283),
    ("llama-3.3-70b", "h100-sxm", "fp8", 2): (6378, 6651, 4199, 5222, 4205, 4146, 762, 3082, 898, 437),
    ("llama-3.1-405b", "b200", "fp4", 4): (6281, 8020, 6345, 6244, 5209, 4933, 749, 4212, 1048, 672),
    ("llama-3.1-405b", "h200-sxm", "fp8", 8): (3814, 5348, 4741, 4724, 3330, 3722, 456, 2948, 650, 505),
    ("llama-3.1-405b", "h100-sxm", "fp8", 8): (3627, 4340, 3116, 3994, 2919, 2895, 453, 2296, 610, 345),
    ("qwen3-235b-a22b", "b200", "fp4", 8): (63362, 66057, 39496, 57117, 42391, 34105, 7329, 26854, 8190, 4453),
    ("qwen3-235b-a22b", "h200-sxm", "fp8", 8): (
        30429, 42821, 26852, 28026, 23789, 22061, 3331, 16672, 3623, 1876,
    ),
    ("qwen3-235b-a22b", "h100-sxm", "fp8", 8): (None, 19658, 12447, 18351, 14898, 15136, None, 9924, 3225, None),
    ("qwen3-30b-a3b", "b200", "fp4", 1): (39827, 37844, 24953, 27817, 25828, 22051, 6251, 17554, 6142, 2944),
}
#: The 23 figures this benchmark held out before the MoE term (17 dense, 6 MoE), for before/after comparison.
PREVIOUS_SUBSET: frozenset[tuple[str, str, int, int]] = frozenset(
    {
        ("llama-3.3-70b", "b200", 128, 128), ("llama-3.3-70b", "b200", 1000, 1000),
        ("llama-3.3-70b", "b200", 2048, 128), ("llama-3.3-70b", "b200", 5000, 500),
        ("llama-3.3-70b", "h200-sxm", 128, 2048), ("llama-3.3-70b", "h200-sxm", 2048, 2048),
        ("llama-3.3-70b", "h200-sxm", 5000, 500), ("llama-3.3-70b", "h200-sxm", 20000, 2000),
        ("llama-3.3-70b", "h100-sxm", 128, 128), ("llama-3.3-70b", "h100-sxm", 5000, 500),
        ("llama-3.1-405b", "b200", 128, 128), ("llama-3.1-405b", "b200", 1000, 1000),
        ("llama-3.1-405b", "b200", 5000, 500), ("llama-3.1-405b", "h200-sxm", 1000, 1000),
        ("llama-3.1-405b", "h200-sxm", 2048, 128), ("llama-3.1-405b", "h100-sxm", 1000, 1000),
        ("llama-3.1-405b", "h100-sxm", 2048, 128), ("qwen3-235b-a22b", "b200", 1000, 1000),
        ("qwen3-235b-a22b", "h200-sxm", 128, 128), ("qwen3-235b-a22b", "h200-sxm", 1000, 1000),
        ("qwen3-235b-a22b", "h100-sxm", 1000, 1000), ("qwen3-30b-a3b", "b200", 1000, 1000),
        ("qwen3-30b-a3b", "b200", 2048, 128),
    }
)
MOE_MODELS = frozenset({"qwen3-235b-a22b", "qwen3-30b-a3b"})

#: NVIDIA's MLPerf Inference v4.1 closed llama2-70b configuration (TensorRT-LLM, FP8 weights and KV):
#: case_id -> (tensor_parallelism, gpu_batch_size per replica). Source: mlcommons/inference_results_v4.1,
#: closed/NVIDIA/configs/llama2-70b/{Offline,Server}/__init__.py (H100_SXM_80GB_TP2x4: TP2, batch 896
#: offline / 1024 server; H200_SXM_141GBx8: TP1, batch 806 offline / 896 server;
#: kvcache_free_gpu_mem_frac 0.90).
MLPERF41_LLAMA2_CONFIG: dict[str, tuple[int, int]] = {
    "mlperf41-h100x8-llama2-70b-offline": (2, 896),
    "mlperf41-h200x8-llama2-70b-offline": (1, 806),
    "mlperf41-h200x8-llama2-70b-server": (1, 896),
}
#: TensorRT-LLM's kvcache_free_gpu_mem_frac in that configuration.
KV_FREE_FRACTION = 0.90


def _input_matching(case: CalibrationCase, tp: int) -> int:
    """Mean input length at which the fitted model reproduces ``case`` (bisection; model is monotone in I)."""
    lo, hi = 1, case.input_tokens
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = estimate(CATALOG.model(case.model), CATALOG.chip(case.chip), tp, case.precision, mid,
                     case.output_tokens, case.ttft_slo_s, case.tpot_slo_s)
        lo, hi = (mid, hi) if r.output_tokens_per_s_per_chip > case.measured else (lo, mid)
    return lo


def _calibration_table() -> None:
    cases = load_calibration_cases()
    report = evaluate_cases(cases, catalog=CATALOG)
    print("== Calibration CSV (tabled constants) ==")
    header = f"{'case':40s} {'predicted':>9s} {'measured':>9s} {'error':>7s} {'tp':>3s} {'batch':>5s}"
    print(header + f" {'bound':>12s} {'util':>5s}  status")
    for row in report.rows:
        status = "admitted" if row.admitted else "HELD OUT (inconsistent shape)"
        print(
            f"{row.case_id:40s} {row.predicted:9.0f} {row.measured:9.0f} {row.error:+7.1%} {row.tp:3d} "
            f"{row.batch:5d} {row.bound:>12s} {row.utilisation:5.2f}  {status}"
        )
    print(
        f"admitted {len(report.admitted)}/{len(report.rows)}: median |error| {report.median_abs_error:.1%}, "
        f"max |error| {report.max_abs_error:.1%}"
    )
    all_err = [abs(r.error) for r in report.rows]
    print(f"all rows (incl. held out): median |error| {np.median(all_err):.1%}, max {max(all_err):.1%}")
    print(
        f"screen: a measurement implying more than {MAX_UTILISATION:.0%} of dense peak FLOPs at its stated "
        "shape is impossible; cases sharing that (model, input, output) are held out"
    )
    for row, case in zip(report.rows, cases, strict=True):
        if not row.admitted:
            need = _input_matching(case, row.tp)
            print(
                f"  {case.case_id}: stated input {case.input_tokens}, output {case.output_tokens}; the fitted "
                f"model reproduces the measurement at a mean input of {need} tokens"
            )


def _mlperf_evidence() -> None:
    """Deployment, KV-capacity bound on the mean input, and a one-constant sweep for the MLPerf llama-2-70b rows."""
    cases = {c.case_id: c for c in load_calibration_cases()}
    print("\n== MLPerf v4.1 llama-2-70b rows: deployment and input-length evidence ==")
    head = f"{'case':36s} {'model TP x DP':>13s} {'published':>9s} {'batch':>5s}"
    print(f"{head} {'resident':>8s} {'max mean input':>14s}")
    for case_id, (tp, batch) in MLPERF41_LLAMA2_CONFIG.items():
        case = cases[case_id]
        chip = CATALOG.chip(case.chip)
        arch = CATALOG.model(case.model)
        r = best_split(arch, chip, case.chips, case.precision, case.input_tokens, case.output_tokens,
                       case.ttft_slo_s, case.tpot_slo_s)
        g = geometry(arch)
        kv_tok = g.kv_elements_per_token * 1.0  # fp8 KV: 1 byte per element
        # generous: nominal memory read as GiB, all of (memory - weights) free, the engine's 0.90 of it
        free = KV_FREE_FRACTION * (tp * chip.memory_gb * 2**30 - g.total_params * 1.0)
        resident = free / (batch * kv_tok)  # KV tokens per sequence at the published batch
        max_input = resident - case.output_tokens / 2.0  # paged KV: a sequence holds I + (tokens so far)
        print(f"{case_id:36s} {f'TP{r.tp} x {r.replicas}':>13s} {f'TP{tp} x {case.chips // tp}':>9s} {batch:5d} "
              f"{resident:8.0f} {max_input:14.0f}  (stated {case.input_tokens})")
    print("resident = 0.90 x (tp x memory as GiB - fp8 weights) / (batch x KV bytes per token); a paged sequence holds "
          "I + O/2 tokens on average, so the mean input is at most resident - O/2 if the published batch is reached")
    print("\none Hopper compute_eff for all 8 rows (t_0 as tabled / 3 ms), no screen:")
    hopper = FAMILY_CONSTANTS["nvidia-hopper"]
    all_cases = list(cases.values())
    for eff in (0.64, 0.70, 0.74, 0.78):
        for t0 in (hopper.step_overhead_s, 0.003):
            rep = evaluate_cases(all_cases, {"nvidia-hopper": hopper.with_fit(eff, hopper.bw_eff, t0)},
                                 catalog=CATALOG)
            errs = [r.error for r in rep.rows]
            mlperf = " ".join(f"{r.error:+.0%}" for r in rep.rows if r.case_id in MLPERF41_LLAMA2_CONFIG)
            other = " ".join(f"{r.error:+.0%}" for r in rep.rows if r.case_id not in MLPERF41_LLAMA2_CONFIG)
            print(f"  compute_eff {eff:.2f} t_0 {t0 * 1e3:.0f} ms: median |error| {np.median(np.abs(errs)):5.1%}, "
                  f"max {np.max(np.abs(errs)):5.1%}  (MLPerf llama-2 {mlperf}; others {other})")


def _refit() -> None:
    print("\n== calibrate() / calibrate_moe() from scratch vs FAMILY_CONSTANTS ==")
    report = calibrate(load_calibration_cases(), catalog=CATALOG)
    fitted = report.constants["nvidia-hopper"]
    table = FAMILY_CONSTANTS["nvidia-hopper"]
    for name in ("compute_eff", "bw_eff", "step_overhead_s"):
        print(f"hopper {name:16s} fitted {getattr(fitted, name):.4g}  table {getattr(table, name):.4g}")
    print(f"  fitted: median |error| {report.median_abs_error:.1%}, max {report.max_abs_error:.1%}")
    moe_cases = load_moe_calibration_cases()
    for family in ("nvidia-hopper", "nvidia-blackwell"):
        rep = calibrate_moe(moe_cases, family, catalog=CATALOG)
        got = rep.constants[family].moe_pair_s
        print(
            f"{family} moe_pair_s fitted {got * 1e9:.2f} ns  table {FAMILY_CONSTANTS[family].moe_pair_s * 1e9:.2f} ns"
            f"  (MoE rows of the family: median |error| {rep.median_abs_error:.1%}, max {rep.max_abs_error:.1%})"
        )
    print("\n== MoE calibration rows (perf_moe_calibration.csv, fitted: in-sample) ==")
    report = evaluate_cases(moe_cases, catalog=CATALOG)
    for row in report.rows:
        print(f"{row.case_id:44s} predicted {row.predicted:8.0f} measured {row.measured:8.0f} {row.error:+6.0%} "
              f"({row.bound})")
    print(f"all {len(report.rows)}: median |error| {report.median_abs_error:.1%}, max {report.max_abs_error:.1%}")


def _held_out() -> None:
    print(f"\n== Held-out published figures (not fitted): {HELD_OUT_SOURCE} ==")
    fitted = {(c.model, c.chip, c.tp, c.input_tokens, c.output_tokens) for c in load_moe_calibration_cases()}
    errors: dict[str, list[float]] = {"dense": [], "moe": [], "dense (previous 17)": [], "moe (previous 6)": []}
    for (model, chip, precision, tp), values in TABLES.items():
        for (isl, osl), measured in zip(SHAPES, values, strict=True):
            if measured is None:
                continue
            kind = "moe" if model in MOE_MODELS else "dense"
            r = estimate(CATALOG.model(model), CATALOG.chip(chip), tp, precision, isl, osl)
            pred = r.output_tokens_per_s_per_chip * tp
            err = pred / measured - 1
            if (model, chip, isl, osl) in PREVIOUS_SUBSET:
                errors[f"{kind} (previous {17 if kind == 'dense' else 6})"].append(abs(err))
            status = "fitted" if (model, chip, tp, isl, osl) in fitted else "held out"
            if status == "held out":
                errors[kind].append(abs(err))
            print(
                f"{model:16s} {chip:9s} {precision} TP{tp} {isl:5d}/{osl:<5d} predicted {pred:8.0f} "
                f"measured {measured:7.0f} {err:+6.0%} ({r.bound}){'' if status == 'held out' else ' [fitted]'}"
            )
    for kind, errs in errors.items():
        print(f"{kind}: median |error| {np.median(errs):.0%}, max {max(errs):.0%} over {len(errs)} figures")
    print("(the 'previous' subsets include 4 MoE figures that are now MoE calibration rows)")


def _timing() -> None:
    goodput_table(CATALOG.models, CATALOG.accelerators)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        table = goodput_table(CATALOG.models, CATALOG.accelerators)
        runs.append(time.perf_counter() - t0)
    shape = table.shape
    print(f"\n== goodput_table() over {shape} (model x chip x case): best of 5 {min(runs) * 1e3:.1f} ms ==")


if __name__ == "__main__":
    _calibration_table()
    _mlperf_evidence()
    _refit()
    _held_out()
    _timing()
