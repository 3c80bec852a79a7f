"""Accuracy of the inference performance model against published measurements.

Run: ``python benchmarks/perf_accuracy.py``

1. The calibration CSV (``sovcloud/data/validation/perf_calibration.csv``): predicted vs measured
   output tokens/s per chip with the tabled family constants, the consistency screen, and the
   median / largest absolute error over the admitted cases.
2. ``calibrate()`` re-fitted from scratch, to show it reproduces the tabled constants.
3. Held-out published figures that were NOT used for fitting (TensorRT-LLM performance overview,
   trtllm-bench max-throughput, total output tokens/s of one TP group).
4. Wall time of ``goodput_table()`` for the full catalog.
"""

from __future__ import annotations

import time

import numpy as np

from sovcloud.perf import estimate, goodput_table
from sovcloud.perf_calibrate import MAX_UTILISATION, calibrate, evaluate_cases, load_calibration_cases
from sovcloud.roofline import FAMILY_CONSTANTS

#: Published held-out figures: (model, chip, precision, TP, ISL, OSL, total output tok/s of the TP group).
#: Source: NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md (v1.0 tables, PyTorch backend,
#: https://github.com/NVIDIA/TensorRT-LLM/blob/main/docs/source/performance/perf-overview.md).
HELD_OUT_SOURCE = "TensorRT-LLM perf-overview.md (v1.0), trtllm-bench max throughput"
HELD_OUT: tuple[tuple[str, str, str, int, int, int, float], ...] = (
    ("llama-3.3-70b", "b200", "fp4", 1, 128, 128, 11147),
    ("llama-3.3-70b", "b200", "fp4", 1, 1000, 1000, 7007),
    ("llama-3.3-70b", "b200", "fp4", 1, 2048, 128, 1339),
    ("llama-3.3-70b", "b200", "fp4", 1, 5000, 500, 1459),
    ("llama-3.3-70b", "h200-sxm", "fp8", 1, 128, 2048, 4336),
    ("llama-3.3-70b", "h200-sxm", "fp8", 1, 2048, 2048, 2003),
    ("llama-3.3-70b", "h200-sxm", "fp8", 1, 5000, 500, 566),
    ("llama-3.3-70b", "h200-sxm", "fp8", 1, 20000, 2000, 283),
    ("llama-3.3-70b", "h100-sxm", "fp8", 2, 128, 128, 6378),
    ("llama-3.3-70b", "h100-sxm", "fp8", 2, 5000, 500, 898),
    ("llama-3.1-405b", "b200", "fp4", 4, 128, 128, 6281),
    ("llama-3.1-405b", "b200", "fp4", 4, 1000, 1000, 5209),
    ("llama-3.1-405b", "b200", "fp4", 4, 5000, 500, 1048),
    ("llama-3.1-405b", "h200-sxm", "fp8", 8, 1000, 1000, 3330),
    ("llama-3.1-405b", "h200-sxm", "fp8", 8, 2048, 128, 456),
    ("llama-3.1-405b", "h100-sxm", "fp8", 8, 1000, 1000, 2919),
    ("llama-3.1-405b", "h100-sxm", "fp8", 8, 2048, 128, 453),
    ("qwen3-235b-a22b", "b200", "fp4", 8, 1000, 1000, 42391),
    ("qwen3-235b-a22b", "h200-sxm", "fp8", 8, 128, 128, 30429),
    ("qwen3-235b-a22b", "h200-sxm", "fp8", 8, 1000, 1000, 23789),
    ("qwen3-235b-a22b", "h100-sxm", "fp8", 8, 1000, 1000, 14898),
    ("qwen3-30b-a3b", "b200", "fp4", 1, 1000, 1000, 25828),
    ("qwen3-30b-a3b", "b200", "fp4", 1, 2048, 128, 6251),
)


def _calibration_table() -> None:
    cases = load_calibration_cases()
    report = evaluate_cases(cases)
    print("== Calibration CSV (tabled constants) ==")
    header = f"{'case':40s} {'predicted':>9s} {'measured':>9s} {'error':>7s} {'tp':>3s} {'batch':>5s}"
    print(header + f" {'bound':>8s} {'util':>5s}  status")
    for row in report.rows:
        status = "admitted" if row.admitted else "HELD OUT (inconsistent shape)"
        print(
            f"{row.case_id:40s} {row.predicted:9.0f} {row.measured:9.0f} {row.error:+7.1%} {row.tp:3d} "
            f"{row.batch:5d} {row.bound:>8s} {row.utilisation:5.2f}  {status}"
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
            alt = [
                estimate(case.model, case.chip, row.tp, case.precision, i, case.output_tokens,
                         case.ttft_slo_s, case.tpot_slo_s).output_tokens_per_s_per_chip / case.measured - 1
                for i in (200, 300)
            ]
            print(
                f"  {case.case_id}: error with input 200 / 300 tokens instead of {case.input_tokens}: "
                f"{alt[0]:+.0%} / {alt[1]:+.0%}"
            )


def _refit() -> None:
    print("\n== calibrate() from scratch vs FAMILY_CONSTANTS ==")
    report = calibrate(load_calibration_cases())
    fitted = report.constants["nvidia-hopper"]
    table = FAMILY_CONSTANTS["nvidia-hopper"]
    for name in ("compute_eff", "bw_eff", "step_overhead_s"):
        print(f"{name:16s} fitted {getattr(fitted, name):.4g}  table {getattr(table, name):.4g}")
    print(f"fitted: median |error| {report.median_abs_error:.1%}, max {report.max_abs_error:.1%}")


def _held_out() -> None:
    print(f"\n== Held-out published figures (not fitted): {HELD_OUT_SOURCE} ==")
    errors: dict[str, list[float]] = {"dense": [], "moe": []}
    for model, chip, precision, tp, isl, osl, measured in HELD_OUT:
        r = estimate(model, chip, tp, precision, isl, osl)
        pred = r.output_tokens_per_s_per_chip * tp
        err = pred / measured - 1
        kind = "moe" if model.startswith("qwen3-") and "a" in model.split("-")[-1] else "dense"
        errors[kind].append(abs(err))
        print(
            f"{model:16s} {chip:9s} {precision} TP{tp} {isl:5d}/{osl:<5d} predicted {pred:8.0f} "
            f"measured {measured:7.0f} {err:+6.0%} ({r.bound})"
        )
    for kind, errs in errors.items():
        print(f"{kind}: median |error| {np.median(errs):.0%}, max {max(errs):.0%} over {len(errs)} figures")


def _timing() -> None:
    goodput_table()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        table = goodput_table()
        runs.append(time.perf_counter() - t0)
    shape = table.shape
    print(f"\n== goodput_table() over {shape} (model x chip x case): best of 5 {min(runs) * 1e3:.1f} ms ==")


if __name__ == "__main__":
    _calibration_table()
    _refit()
    _held_out()
    _timing()
