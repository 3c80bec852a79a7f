"""Calibration of the performance model's family constants against published measurements.

Each case (a row of ``data/validation/perf_calibration.csv``) names a system of ``chips`` chips,
a model, a precision, a request shape and an SLO scenario, and its measured output tokens/s per
chip. The prediction is the planner's own policy: the best tensor-parallel degree among
1, 2, 4, 8 that divides ``chips`` (replicas fill the system), at the case's SLOs.

Consistency screen (data quality, not a correction): a case's implied utilisation is
``u = meas * f_out / F_p`` with ``f_out = (2*P_act*(I+O) + O*c*a_dec + I*(I+1)/2*a_pre) / O`` the
FLOPs per output token of its stated request shape and ``F_p`` the chip's dense peak at its
precision. ``u > MAX_UTILISATION`` (0.78 = 1550/1979 TFLOPS, the best FP8 GEMM ever reported on
a Hopper GPU: DeepGEMM on H800, github.com/deepseek-ai/DeepGEMM) is physically impossible for a
whole serving step, so the stated shape is wrong; that case and every case sharing its workload
definition (model, input and output tokens) are held out of the fit and of the error bands,
and reported with their errors.

Fit: the three constants ``x = (compute_eff, bw_eff, step_overhead_s)`` of one family minimise
the sum of squared log errors ``sum_i ln(pred_i(x) / meas_i)**2`` over that family's cases
(bounded Nelder-Mead from the tabled values). The other constants (link efficiency, all-reduce
latency, memory reserve) come from sources, not from the fit. Error of a case:
``pred/meas - 1``; the report gives the median and the largest absolute error.

MoE fit (:func:`calibrate_moe`): the dispatch cost per routed (token, expert) pair
``moe_pair_s`` of one family minimises the same loss over that family's rows of
``data/validation/perf_moe_calibration.csv`` (fine-grained MoE, 128 experts, 8 per token),
with the roofline constants held at their tabled values (bounded 1-D search on ``ln c``). A
row with a ``tp`` column is predicted at that tensor-parallel degree only (the published
configuration) instead of the best divisor of ``chips``.

Cases name their model and chip by id; every function that reads a case takes the ``catalog`` that
resolves them (:class:`sovcloud.physics.catalog.Catalog`, e.g. the bundled scenario).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from sovcloud.errors import PhysicsError
from sovcloud.physics.catalog import Catalog
from sovcloud.physics.families import FamilyConstants, family_constants
from sovcloud.physics.parallel import best_estimate, split_degrees
from sovcloud.physics.perf import SCENARIOS, PerfResult
from sovcloud.physics.roofline import geometry

#: Highest plausible share of dense tensor peak for a whole serving step (DeepGEMM: 1550 of
#: 1979 TFLOPS FP8 on H800, the best Hopper GEMM reported).
MAX_UTILISATION = 1550.0 / 1979.0

__all__ = [
    "MAX_UTILISATION",
    "CalibrationCase",
    "CalibrationReport",
    "CalibrationRow",
    "calibrate",
    "calibrate_moe",
    "evaluate_cases",
    "implied_utilisation",
    "load_calibration_cases",
    "load_moe_calibration_cases",
    "predict_case",
    "screen",
]


@dataclass(frozen=True)
class CalibrationCase:
    """One published measurement."""

    case_id: str
    chip: str
    chips: int
    model: str
    precision: str
    scenario: str
    input_tokens: int
    output_tokens: int
    ttft_slo_s: float | None
    tpot_slo_s: float | None
    measured: float  # output tokens / s / chip
    source: str
    tp: int | None = None  # published tensor-parallel degree; None: best divisor of ``chips``


@dataclass(frozen=True)
class CalibrationRow:
    case_id: str
    predicted: float
    measured: float
    error: float  # predicted / measured - 1
    tp: int
    batch: int
    bound: str
    utilisation: float  # implied share of dense peak (see module doc)
    admitted: bool  # False: held out by the consistency screen


@dataclass(frozen=True)
class CalibrationReport:
    """Constants used and the per-case errors they give."""

    constants: dict[str, FamilyConstants]
    rows: tuple[CalibrationRow, ...]

    @property
    def admitted(self) -> tuple[CalibrationRow, ...]:
        return tuple(r for r in self.rows if r.admitted)

    @property
    def held_out(self) -> tuple[CalibrationRow, ...]:
        return tuple(r for r in self.rows if not r.admitted)

    @property
    def median_abs_error(self) -> float:
        """Median |pred/meas - 1| over admitted cases."""
        return float(np.median([abs(r.error) for r in self.admitted]))

    @property
    def max_abs_error(self) -> float:
        """Largest |pred/meas - 1| over admitted cases."""
        return float(max(abs(r.error) for r in self.admitted))


def _opt_float(text: str) -> float | None:
    return float(text) if text.strip() else None


def load_calibration_cases(
    path: str | Path | None = None, *, name: str = "perf_calibration.csv"
) -> list[CalibrationCase]:
    """Read a calibration CSV (default: ``name`` as shipped in ``sovcloud/data/validation``).

    An optional ``tp`` column fixes the tensor-parallel degree of a row.
    """
    if path is None:
        text = (resources.files("sovcloud") / "data" / "validation" / name).read_text()
    else:
        text = Path(path).read_text()
    cases = []
    for row in csv.DictReader(text.splitlines()):
        ttft = _opt_float(row["ttft_slo_s"])
        tpot = _opt_float(row["tpot_slo_s"])
        if ttft is None and tpot is None:
            named = SCENARIOS.get(row["scenario"])
            if named is None:
                raise PhysicsError(f"calibration case {row['case_id']}: unknown scenario '{row['scenario']}'")
            ttft, tpot = named
        cases.append(
            CalibrationCase(
                case_id=row["case_id"],
                chip=row["chip"],
                chips=int(row["chips"]),
                model=row["model"],
                precision=row["precision"],
                scenario=row["scenario"],
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                ttft_slo_s=ttft,
                tpot_slo_s=tpot,
                measured=float(row["measured_output_tokens_per_s_per_chip"]),
                source=row["source"],
                tp=int(row["tp"]) if (row.get("tp") or "").strip() else None,
            )
        )
    return cases


def implied_utilisation(case: CalibrationCase, *, catalog: Catalog) -> float:
    """``meas * f_out / F_p``: share of the chip's dense peak the measurement implies (module doc)."""
    g = geometry(catalog.model(case.model))
    chip = catalog.chip(case.chip)
    peak = chip.tflops.get(case.precision)  # type: ignore[call-overload]
    if not peak:
        return float("nan")
    i_t, o_t = float(case.input_tokens), float(case.output_tokens)
    ctx = i_t + (o_t - 1.0) / 2.0
    flops = 2.0 * g.active_params * (i_t + o_t) + o_t * ctx * g.attn_flops_decode
    flops += i_t * (i_t + 1.0) / 2.0 * g.attn_flops_prefill
    return float(case.measured * flops / o_t / (float(peak) * 1e12))


def screen(cases: Sequence[CalibrationCase], *, catalog: Catalog) -> dict[str, bool]:
    """case_id -> admitted, by the consistency screen of the module docstring."""
    bad_shapes = {
        (c.model, c.input_tokens, c.output_tokens)
        for c in cases
        if implied_utilisation(c, catalog=catalog) > MAX_UTILISATION
    }
    return {c.case_id: (c.model, c.input_tokens, c.output_tokens) not in bad_shapes for c in cases}


def predict_case(
    case: CalibrationCase, constants: FamilyConstants | None = None, *, catalog: Catalog
) -> PerfResult:
    """The model's figure for one TP group of ``case``: its ``tp``, else the best of ``split_degrees(chips)`` up to 8.

    The same choice as :func:`sovcloud.physics.parallel.best_split` (replicas fill the system; goodput
    per chip is that of one group), returned as the group's result.
    """
    upto8 = [t for t in split_degrees(case.chips) if t <= 8]
    degrees = [case.tp] if case.tp is not None else upto8
    return best_estimate(
        catalog.model(case.model),
        catalog.chip(case.chip),
        case.precision,
        case.input_tokens,
        case.output_tokens,
        case.ttft_slo_s,
        case.tpot_slo_s,
        tp_degrees=degrees,
        constants=constants,
    )


def evaluate_cases(
    cases: Sequence[CalibrationCase], constants: Mapping[str, FamilyConstants] | None = None, *, catalog: Catalog
) -> CalibrationReport:
    """Predicted vs measured for every case, with ``constants`` per family (default: the table)."""
    used: dict[str, FamilyConstants] = {}
    admitted = screen(cases, catalog=catalog)
    rows = []
    for case in cases:
        family = catalog.chip(case.chip).family
        consts = (constants or {}).get(family) or family_constants(family)
        used[family] = consts
        r = predict_case(case, consts, catalog=catalog)
        pred = r.output_tokens_per_s_per_chip
        rows.append(
            CalibrationRow(
                case.case_id,
                pred,
                case.measured,
                pred / case.measured - 1.0,
                r.tp,
                r.batch,
                r.bound,
                implied_utilisation(case, catalog=catalog),
                admitted[case.case_id],
            )
        )
    return CalibrationReport(constants=used, rows=tuple(rows))


def calibrate(
    cases: Sequence[CalibrationCase], family: str = "nvidia-hopper", *, catalog: Catalog
) -> CalibrationReport:
    """Fit ``compute_eff``, ``bw_eff``, ``step_overhead_s`` of ``family`` on its cases (see module doc)."""
    family_cases = [c for c in cases if catalog.chip(c.chip).family == family]
    admitted = screen(family_cases, catalog=catalog)
    mine = [c for c in family_cases if admitted[c.case_id]]
    if not mine:
        raise PhysicsError(f"no admitted calibration case runs on a chip of family '{family}'")
    start = family_constants(family)
    measured = np.array([c.measured for c in mine])

    def loss(x: np.ndarray) -> float:
        consts = start.with_fit(float(x[0]), float(x[1]), float(x[2]) / 1e3)
        pred = np.array([predict_case(c, consts, catalog=catalog).output_tokens_per_s_per_chip for c in mine])
        if np.any(pred <= 0):
            return 1e6
        return float(np.sum(np.log(pred / measured) ** 2))

    x0 = np.array([start.compute_eff, start.bw_eff, start.step_overhead_s * 1e3])
    res = minimize(
        loss,
        x0,
        method="Nelder-Mead",
        bounds=[(0.2, MAX_UTILISATION), (0.6, 0.9), (0.0, 20.0)],
        options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 400},
    )
    fitted = start.with_fit(float(res.x[0]), float(res.x[1]), float(res.x[2]) / 1e3)
    return evaluate_cases(family_cases, {family: fitted}, catalog=catalog)


def load_moe_calibration_cases(path: str | Path | None = None) -> list[CalibrationCase]:
    """The fine-grained MoE calibration rows (``perf_moe_calibration.csv``, TensorRT-LLM perf overview)."""
    return load_calibration_cases(path, name="perf_moe_calibration.csv")


def calibrate_moe(cases: Sequence[CalibrationCase], family: str, *, catalog: Catalog) -> CalibrationReport:
    """Fit ``moe_pair_s`` of ``family`` on its MoE cases, roofline constants held (see module doc)."""
    mine = [c for c in cases if catalog.chip(c.chip).family == family and catalog.model(c.model).is_moe]
    if not mine:
        raise PhysicsError(f"no MoE calibration case runs on a chip of family '{family}'")
    start = family_constants(family)
    measured = np.array([c.measured for c in mine])

    def loss(log_ns: float) -> float:
        consts = start.with_moe(float(np.exp(log_ns)) * 1e-9)
        pred = np.array([predict_case(c, consts, catalog=catalog).output_tokens_per_s_per_chip for c in mine])
        if np.any(pred <= 0):
            return 1e6
        return float(np.sum(np.log(pred / measured) ** 2))

    res = minimize_scalar(loss, bounds=(np.log(0.1), np.log(1000.0)), method="bounded", options={"xatol": 1e-3})
    fitted = start.with_moe(float(np.exp(res.x)) * 1e-9)
    return evaluate_cases(mine, {family: fitted}, catalog=catalog)
