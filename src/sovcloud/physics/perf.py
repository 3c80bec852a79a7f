"""Inference performance model: fit, batch, TTFT, TPOT and goodput per chip.

For a deployment of ``n`` chips (one tensor-parallel group) the per-step time ``t_step(B)`` of
the steady continuous-batching mix is the summed per-phase roofline of :mod:`sovcloud.physics.roofline`
(GEMMs, attention, KV writes, all-reduces, MoE dispatch of routed token-expert pairs, fixed
overhead). From it, for every candidate batch ``B = 1..B_max`` at once (numpy,
:mod:`sovcloud.physics.batching`)::

    TPOT(B)             = t_step(B)
    TTFT(B)             = t_step/2 + max(ceil(I/C)*t_step, t_prefill(I))
    decode rate         = B / t_step(B)                 (output tokens/s of the group)
    prefill rate        = B*(I/O) / t_step(B)           (prompt tokens/s of the group)
    goodput per chip    = max over {B : TTFT <= SLO_ttft and TPOT <= SLO_tpot} of B / (n * t_step(B))

:func:`estimate` is one group (``tp = chips``, one replica); :func:`goodput_table` is the planner's
table of goodput per chip over models, chips and request cases at the best tensor-parallel degree.
A system of ``N`` chips split into data-parallel replicas is :func:`sovcloud.physics.parallel.best_split`.

``B_max = min(MAX_BATCH, floor(((1-r)*n*M - W) / ((I+O)*kv_tok)))``; a deployment fits when the
weights ``W`` and one sequence's KV cache fit in ``(1-r)*n*M``. Results that cannot run (the
precision is unsupported, the chip has no device memory, the model does not fit, no batch
meets the SLOs) come back with ``ok`` False and a ``reason``; only invalid inputs raise
:class:`~sovcloud.errors.PhysicsError`. Models and chips are catalog entries: callers holding ids
resolve them with their catalog (:class:`sovcloud.physics.catalog.Catalog`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from sovcloud.errors import PhysicsError
from sovcloud.physics.batching import OperatingPoint, best_points, capacity
from sovcloud.physics.checks import (
    check_chip,
    check_int,
    check_model,
    check_precision,
    check_slo,
    unsupported_reason,
)
from sovcloud.physics.families import FamilyConstants
from sovcloud.physics.roofline import Geometry, deployment, geometry, kv_precision_for
from sovcloud.scenario.catalog import Accelerator, ModelArch
from sovcloud.vocab import PRECISION_BYTES, SLO_SCENARIOS

__all__ = [
    "DEFAULT_CASES",
    "SCENARIOS",
    "TP_DEGREES",
    "PerfResult",
    "Workload",
    "estimate",
    "goodput_table",
]

#: Named SLO scenarios (defined in :mod:`sovcloud.vocab`, light enough for the CLI's help).
SCENARIOS = SLO_SCENARIOS
#: Tensor-parallel degrees the planner considers.
TP_DEGREES: tuple[int, ...] = (1, 2, 4, 8)


@dataclass(frozen=True)
class Workload:
    """One request shape and its SLOs (a column of :func:`goodput_table`)."""

    name: str
    input_tokens: int
    output_tokens: int
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None


#: Default planner cases: 1000-in/1000-out chat under each named SLO scenario.
DEFAULT_CASES: tuple[Workload, ...] = (
    Workload("offline", 1000, 1000),
    Workload("server", 1000, 1000, *SCENARIOS["server"]),
    Workload("interactive", 1000, 1000, *SCENARIOS["interactive"]),
)


@dataclass(frozen=True)
class PerfResult:
    """Performance of one (model, chip, chips, precision, request shape, SLOs).

    ``fits``: weights and one sequence's KV cache fit; ``meets_slo``: some batch meets the SLOs;
    ``ok`` = both. ``chips`` = ``tp * replicas``: ``tp`` chips per tensor-parallel group (one replica),
    ``replicas`` identical data-parallel groups (1 for :func:`estimate`; ``best_split`` chooses).
    ``batch``, ``max_batch``, latencies, the KV budget and the step components are per replica; the
    prefill/decode rates are of all replicas; ``output_tokens_per_s_per_chip`` is per chip. ``bound``
    names the largest step component (compute, memory, communication, moe-dispatch, overhead). When not
    ``ok`` the rates are 0, ``batch`` is 0 and ``reason`` says why (with numbers); latencies
    then show the best case (batch 1) when the model fits, else NaN.
    """

    model: str
    chip: str
    chips: int
    precision: str
    kv_precision: str
    input_tokens: int
    output_tokens: int
    ttft_slo_s: float | None
    tpot_slo_s: float | None
    fits: bool
    meets_slo: bool
    reason: str | None
    batch: int
    max_batch: int
    ttft_s: float
    tpot_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    output_tokens_per_s_per_chip: float
    bound: str
    weight_gb: float
    kv_gb_per_sequence: float
    kv_budget_gb: float
    step_compute_s: float
    step_memory_s: float
    step_comm_s: float
    step_overhead_s: float
    step_moe_dispatch_s: float
    tp: int
    replicas: int

    @property
    def ok(self) -> bool:
        return self.fits and self.meets_slo

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and inf become None)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            else:
                out[key] = value
        out["ok"] = self.ok
        return out


def _refused(kv_budget_gb: float = math.nan) -> dict[str, Any]:
    """The fields of a result that cannot run at all: no batch, no rates, no step components."""
    nan = float("nan")
    return {
        "meets_slo": False,
        "batch": 0,
        "max_batch": 0,
        "ttft_s": nan,
        "tpot_s": nan,
        "prefill_tokens_per_s": 0.0,
        "decode_tokens_per_s": 0.0,
        "output_tokens_per_s_per_chip": 0.0,
        "bound": "none",
        "kv_budget_gb": kv_budget_gb,
        "step_compute_s": nan,
        "step_memory_s": nan,
        "step_comm_s": nan,
        "step_overhead_s": nan,
        "step_moe_dispatch_s": nan,
    }


def _point(p: OperatingPoint, overhead: float) -> dict[str, Any]:
    """The latency, bound and step-component fields of operating point ``p``."""
    return {
        "ttft_s": p.ttft,
        "tpot_s": p.step,
        "bound": p.bound(overhead),
        "step_compute_s": p.compute,
        "step_memory_s": p.memory,
        "step_comm_s": p.comm,
        "step_moe_dispatch_s": p.moe,
    }


def _slo_miss_reason(
    chip: Accelerator,
    chips: int,
    ttft_slo: float | None,
    tpot_slo: float | None,
    one: OperatingPoint,
    free: OperatingPoint,
) -> str:
    """Why no batch meets the SLOs: batch 1's latencies (``one``) and the goodput without SLOs (``free``)."""
    limits = []
    if ttft_slo is not None:
        limits.append(f"TTFT <= {ttft_slo:g} s")
    if tpot_slo is not None:
        limits.append(f"TPOT <= {tpot_slo:g} s")
    free_rate = free.batch / free.step / chips
    return (
        f"no batch meets {' and '.join(limits)} on {chips} x {chip.id}: even batch 1 gives TTFT "
        f"{one.ttft:.3f} s, TPOT {one.step:.4f} s (without SLOs: {free_rate:.0f} tok/s/chip)"
    )


def _identity(
    model: ModelArch, chip: Accelerator, chips: int, precision: str, i_t: int, o_t: int, g: Geometry
) -> dict[str, Any]:
    """The fields that depend only on the inputs: ids, shape, weights and KV size per sequence."""
    kv_prec = kv_precision_for(precision)
    return {
        "model": model.id,
        "chip": chip.id,
        "chips": chips,
        "precision": precision,
        "kv_precision": kv_prec,
        "input_tokens": i_t,
        "output_tokens": o_t,
        "weight_gb": g.total_params * PRECISION_BYTES[precision] / 1e9,
        "kv_gb_per_sequence": (i_t + o_t) * g.kv_elements_per_token * PRECISION_BYTES[kv_prec] / 1e9,
        "tp": chips,
        "replicas": 1,
    }


def estimate(
    model: ModelArch,
    chip: Accelerator,
    chips: int,
    precision: str,
    input_tokens: int,
    output_tokens: int,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    *,
    constants: FamilyConstants | None = None,
) -> PerfResult:
    """Best operating point of ``chips`` x ``chip`` (one TP group) serving ``model`` at ``precision``.

    Picks the batch maximising ``B / t_step(B)`` among those meeting both SLOs (see module
    docstring). ``constants`` overrides the chip family's derating constants (calibration).
    """
    m = check_model(model)
    c = check_chip(chip)
    n = check_int("chips", chips)
    i_t = check_int("input_tokens", input_tokens)
    o_t = check_int("output_tokens", output_tokens)
    ttft_slo = check_slo("ttft_slo_s", ttft_slo_s)
    tpot_slo = check_slo("tpot_slo_s", tpot_slo_s)
    prec = check_precision(precision)
    g = geometry(m)
    base = {**_identity(m, c, n, prec, i_t, o_t, g), "ttft_slo_s": ttft_slo, "tpot_slo_s": tpot_slo}
    if not c.supports(prec):
        return PerfResult(**base, **_refused(), fits=False, reason=unsupported_reason(c, prec))
    d = deployment(c, n, prec, constants)
    cap = capacity(m, c, n, prec, g, d, i_t + o_t)
    if cap.reason is not None:
        return PerfResult(**base, **_refused(cap.kv_budget_bytes / 1e9), fits=False, reason=cap.reason)
    best, free = best_points(g, d, cap.max_batch, i_t, o_t, [(ttft_slo, tpot_slo), (None, None)])
    overhead = d.consts.step_overhead_s
    fitted: dict[str, Any] = {
        "fits": True,
        "max_batch": cap.max_batch,
        "kv_budget_gb": cap.kv_budget_bytes / 1e9,
        "step_overhead_s": overhead,
    }
    if not best.meets:
        one = best_points(g, d, 1, i_t, o_t, [(None, None)])[0]
        return PerfResult(
            **base,
            **fitted,
            **_point(one, overhead),
            meets_slo=False,
            reason=_slo_miss_reason(c, n, ttft_slo, tpot_slo, one, free),
            batch=0,
            prefill_tokens_per_s=0.0,
            decode_tokens_per_s=0.0,
            output_tokens_per_s_per_chip=0.0,
        )
    dec = best.batch / best.step
    return PerfResult(
        **base,
        **fitted,
        **_point(best, overhead),
        meets_slo=True,
        reason=None,
        batch=best.batch,
        prefill_tokens_per_s=dec * i_t / o_t,
        decode_tokens_per_s=dec,
        output_tokens_per_s_per_chip=dec / n,
    )


def _as_cases(cases: Mapping[str, Workload] | Sequence[Workload]) -> list[Workload]:
    items = list(cases.values()) if isinstance(cases, Mapping) else list(cases)
    if not items:
        raise PhysicsError("goodput_table needs at least one case")
    for w in items:
        check_int(f"case '{w.name}' input_tokens", w.input_tokens)
        check_int(f"case '{w.name}' output_tokens", w.output_tokens)
        check_slo(f"case '{w.name}' ttft_slo_s", w.ttft_slo_s)
        check_slo(f"case '{w.name}' tpot_slo_s", w.tpot_slo_s)
    return items


def goodput_table(
    models: Sequence[ModelArch],
    chips: Sequence[Accelerator],
    precision_pref: Sequence[str] = ("fp8", "bf16", "fp16", "int8"),
    cases: Mapping[str, Workload] | Sequence[Workload] = DEFAULT_CASES,
    *,
    tp_degrees: Sequence[int] = TP_DEGREES,
) -> xr.DataArray:
    """Output tokens/s per chip meeting each case's SLOs, dims (model, chip, case).

    ``models`` and ``chips`` are catalog entries (a whole catalog: ``catalog.models``,
    ``catalog.accelerators``). Per (model, chip) the precision is the first of ``precision_pref``
    the chip supports; the tensor-parallel degree is the one in ``tp_degrees`` with the highest
    goodput per chip for each case (the smallest on ties). NaN where the pair cannot run (no
    supported precision, no fit); 0 where it fits but no batch meets the SLOs. Coordinates ``tp``
    (0 = none) and ``precision`` ('' = none) record the choice. All batches of a deployment are
    evaluated in one numpy pass and shared between cases of equal request shape.
    """
    model_list = [check_model(m) for m in models]
    chip_list = [check_chip(c) for c in chips]
    for p in precision_pref:
        check_precision(p)
    work = _as_cases(cases)
    degrees = sorted({check_int("tp degree", t) for t in tp_degrees})
    shapes = sorted({(w.input_tokens, w.output_tokens) for w in work})
    shape_cases = {
        s: [k for k, w in enumerate(work) if (w.input_tokens, w.output_tokens) == s] for s in shapes
    }

    values = np.full((len(model_list), len(chip_list), len(work)), np.nan)
    tps = np.zeros(values.shape, dtype=np.int64)
    precs = np.full(values.shape, "", dtype=object)
    for mi, m in enumerate(model_list):
        g = geometry(m)
        for ci, c in enumerate(chip_list):
            prec = next((p for p in precision_pref if c.supports(p)), None)
            if prec is None:
                continue
            for n in degrees:
                d = deployment(c, n, prec)
                for (i_t, o_t), idx in shape_cases.items():
                    cap = capacity(m, c, n, prec, g, d, i_t + o_t)
                    if cap.reason is not None:
                        continue
                    slos = [(work[k].ttft_slo_s, work[k].tpot_slo_s) for k in idx]
                    for k, o in zip(idx, best_points(g, d, cap.max_batch, i_t, o_t, slos), strict=True):
                        rate = o.batch / o.step / n if o.meets else 0.0
                        if np.isnan(values[mi, ci, k]) or rate > values[mi, ci, k]:
                            values[mi, ci, k] = rate
                            tps[mi, ci, k] = n if o.meets else 0
                            precs[mi, ci, k] = prec
    dims = ("model", "chip", "case")
    return xr.DataArray(
        values,
        dims=dims,
        coords={
            "model": [m.id for m in model_list],
            "chip": [c.id for c in chip_list],
            "case": [w.name for w in work],
            "tp": (dims, tps),
            "precision": (dims, precs.astype(str)),
        },
        name="output_tokens_per_s_per_chip",
        attrs={"units": "output tokens / s / chip", "nan": "cannot run (unsupported or does not fit)"},
    )
