"""Inference performance model: fit, batch, TTFT, TPOT and goodput per chip.

For a deployment of ``n`` chips (one tensor-parallel group) the per-step time ``t_step(B)`` of
the steady continuous-batching mix is the summed per-phase roofline of :mod:`sovcloud.roofline`
(GEMMs, attention, KV writes, all-reduces, MoE dispatch of routed token-expert pairs, fixed
overhead). From it, for every candidate batch
``B = 1..B_max`` at once (numpy)::

    TPOT(B)             = t_step(B)
    TTFT(B)             = t_step/2 + max(ceil(I/C)*t_step, t_prefill(I))
    decode rate         = B / t_step(B)                 (output tokens/s of the group)
    prefill rate        = B*(I/O) / t_step(B)           (prompt tokens/s of the group)
    goodput per chip    = max over {B : TTFT <= SLO_ttft and TPOT <= SLO_tpot} of B / (n * t_step(B))

A system of ``N`` chips is served as ``N/tp`` data-parallel replicas of one ``tp``-chip group
(:func:`best_split`: ``tp`` the power of two dividing ``N``, or ``N``, with the most goodput per chip);
:func:`estimate` is one group (``tp = chips``, one replica).

``B_max = min(MAX_BATCH, floor(((1-r)*n*M - W) / ((I+O)*kv_tok)))``; a deployment fits when the
weights ``W`` and one sequence's KV cache fit in ``(1-r)*n*M``. Results that cannot run (the
precision is unsupported, the chip has no device memory, the model does not fit, no batch
meets the SLOs) come back with ``ok`` False and a ``reason``; only invalid inputs raise
:class:`~sovcloud.errors.PhysicsError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr

from sovcloud.errors import PhysicsError
from sovcloud.physics.roofline import (
    MAX_BATCH,
    Deployment,
    FamilyConstants,
    Geometry,
    deployment,
    geometry,
    kv_precision_for,
    step_times,
)
from sovcloud.scenario.catalog import Accelerator, ModelArch
from sovcloud.scenario.loader import Scenario, load_scenario
from sovcloud.vocab import PRECISION_BYTES, SLO_SCENARIOS

__all__ = [
    "DEFAULT_CASES",
    "SCENARIOS",
    "TP_DEGREES",
    "PerfResult",
    "Workload",
    "best_estimate",
    "best_split",
    "estimate",
    "goodput_table",
    "resolve_chip",
    "resolve_model",
    "split_degrees",
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
    ``replicas`` identical data-parallel groups (1 for :func:`estimate`; :func:`best_split` chooses).
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


@lru_cache(maxsize=1)
def _default_scenario() -> Scenario:
    return load_scenario()


def resolve_model(model: ModelArch | str) -> ModelArch:
    """``model`` itself, or the catalog model with that id (UnknownEntity if none)."""
    return model if isinstance(model, ModelArch) else _default_scenario().model(model)


def resolve_chip(chip: Accelerator | str) -> Accelerator:
    """``chip`` itself, or the catalog chip with that id (UnknownEntity if none)."""
    return chip if isinstance(chip, Accelerator) else _default_scenario().chip(chip)


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise PhysicsError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def _check_slo(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        raise PhysicsError(f"{name} must be a positive number of seconds or None (got {value!r})")
    return float(value)


def _check_precision(precision: str) -> str:
    if precision not in PRECISION_BYTES:
        raise PhysicsError(f"unknown precision '{precision}'; use one of {', '.join(PRECISION_BYTES)}")
    return precision


def _unsupported_reason(chip: Accelerator, precision: str) -> str:
    kind = "tensor cores" if precision != "int8" else "integer tensor units"
    return f"{chip.id} has no {precision} {kind}; supported: {', '.join(chip.tflops)}"


@dataclass(frozen=True)
class _Outcome:
    """Best operating point of one deployment for one (I, O, SLO)."""

    batch: int
    step: float
    ttft: float
    compute: float
    memory: float
    comm: float
    moe: float
    meets: bool


def _memory_check(
    model: ModelArch,
    chip: Accelerator,
    chips: int,
    precision: str,
    g: Geometry,
    d: Deployment,
    seq_tokens: int,
) -> tuple[str | None, float, float, int]:
    """(reason or None, KV budget bytes, KV bytes per sequence, B_max)."""
    weights = g.total_params * d.weight_bytes_per_param
    kv_seq = seq_tokens * g.kv_elements_per_token * d.kv_bytes_per_element
    total = chips * d.memory_bytes
    usable = (1.0 - d.consts.mem_reserve_frac) * total
    budget = usable - weights
    gb = 1e9
    if chip.mem_bw_tbps is None:
        why = (
            f"{chip.id} cannot host {model.id}: it has {chip.memory_gb * 1e3:.0f} MB of on-chip memory "
            f"per chip and no device DRAM ({chips} chip(s): {total / gb:.3f} GB), while {model.id} needs "
            f"{weights / gb:.1f} GB of {precision} weights plus KV cache, which would have to stream over "
            f"{chip.interconnect_gbps:.0f} GB/s host links"
        )
        return why, budget, kv_seq, 0
    if chips > 1 and chip.interconnect_gbps <= 0:
        why = f"{chip.id} has no scale-up interconnect (interconnect_gbps 0) for tensor parallelism"
        return why, budget, kv_seq, 0
    if seq_tokens > g.context_length:
        why = f"{seq_tokens} tokens per sequence exceed {model.id}'s context length {g.context_length}"
        return why, budget, kv_seq, 0
    if budget < kv_seq:
        why = (
            f"{model.id} does not fit on {chips} x {chip.id}: it needs {(weights + kv_seq) / gb:.1f} GB "
            f"({weights / gb:.1f} GB of {precision} weights + {kv_seq / gb:.2f} GB KV cache for one "
            f"{seq_tokens}-token sequence) but only {usable / gb:.1f} GB are usable ({total / gb:.0f} GB "
            f"less {d.consts.mem_reserve_frac:.0%} reserved for activations and runtime)"
        )
        return why, budget, kv_seq, 0
    b_max = int(min(MAX_BATCH, budget // kv_seq))
    return None, budget, kv_seq, b_max


def _best_points(
    g: Geometry,
    d: Deployment,
    b_max: int,
    input_tokens: int,
    output_tokens: int,
    slos: Sequence[tuple[float | None, float | None]],
) -> list[_Outcome]:
    """Best batch for each SLO pair, evaluating all batches 1..b_max in one array pass."""
    batch = np.arange(1, b_max + 1, dtype=np.float64)
    st = step_times(g, d, batch, input_tokens, output_tokens)
    rate = batch / st.step
    out: list[_Outcome] = []
    for ttft_slo, tpot_slo in slos:
        ok = np.ones(batch.shape, dtype=bool)
        if ttft_slo is not None:
            ok &= st.ttft <= ttft_slo
        if tpot_slo is not None:
            ok &= st.step <= tpot_slo
        meets = bool(ok.any())
        i = int(np.argmax(np.where(ok, rate, -1.0))) if meets else 0
        out.append(
            _Outcome(
                batch=int(batch[i]),
                step=float(st.step[i]),
                ttft=float(st.ttft[i]),
                compute=float(st.compute[i]),
                memory=float(st.memory[i]),
                comm=float(st.comm[i]),
                moe=float(st.moe_dispatch[i]),
                meets=meets,
            )
        )
    return out


def _bound(o: _Outcome, overhead: float) -> str:
    parts = {
        "compute": o.compute,
        "memory": o.memory,
        "communication": o.comm,
        "moe-dispatch": o.moe,
        "overhead": overhead,
    }
    return max(parts, key=lambda k: parts[k])


def estimate(
    model: ModelArch | str,
    chip: Accelerator | str,
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
    m = resolve_model(model)
    c = resolve_chip(chip)
    n = _check_int("chips", chips)
    i_t = _check_int("input_tokens", input_tokens)
    o_t = _check_int("output_tokens", output_tokens)
    ttft_slo = _check_slo("ttft_slo_s", ttft_slo_s)
    tpot_slo = _check_slo("tpot_slo_s", tpot_slo_s)
    prec = _check_precision(precision)
    g = geometry(m)
    kv_prec = kv_precision_for(prec)
    base: dict[str, Any] = {
        "model": m.id,
        "chip": c.id,
        "chips": n,
        "precision": prec,
        "kv_precision": kv_prec,
        "input_tokens": i_t,
        "output_tokens": o_t,
        "ttft_slo_s": ttft_slo,
        "tpot_slo_s": tpot_slo,
        "weight_gb": g.total_params * PRECISION_BYTES[prec] / 1e9,
        "kv_gb_per_sequence": (i_t + o_t) * g.kv_elements_per_token * PRECISION_BYTES[kv_prec] / 1e9,
        "tp": n,
        "replicas": 1,
    }
    nan = float("nan")
    refused: dict[str, Any] = {
        "meets_slo": False,
        "batch": 0,
        "max_batch": 0,
        "ttft_s": nan,
        "tpot_s": nan,
        "prefill_tokens_per_s": 0.0,
        "decode_tokens_per_s": 0.0,
        "output_tokens_per_s_per_chip": 0.0,
        "bound": "none",
        "kv_budget_gb": nan,
        "step_compute_s": nan,
        "step_memory_s": nan,
        "step_comm_s": nan,
        "step_overhead_s": nan,
        "step_moe_dispatch_s": nan,
    }
    if not c.supports(prec):
        return PerfResult(**base, **refused, fits=False, reason=_unsupported_reason(c, prec))
    d = deployment(c, n, prec, constants)
    reason, budget, _, b_max = _memory_check(m, c, n, prec, g, d, i_t + o_t)
    if reason is not None:
        refused["kv_budget_gb"] = budget / 1e9
        return PerfResult(**base, **refused, fits=False, reason=reason)
    best, first = _best_points(g, d, b_max, i_t, o_t, [(ttft_slo, tpot_slo), (None, None)])
    common: dict[str, Any] = {
        "max_batch": b_max,
        "kv_budget_gb": budget / 1e9,
        "step_overhead_s": d.consts.step_overhead_s,
    }
    if not best.meets:
        one = _best_points(g, d, 1, i_t, o_t, [(None, None)])[0]
        limits = []
        if ttft_slo is not None:
            limits.append(f"TTFT <= {ttft_slo:g} s")
        if tpot_slo is not None:
            limits.append(f"TPOT <= {tpot_slo:g} s")
        free_rate = first.batch / first.step / n
        why = (
            f"no batch meets {' and '.join(limits)} on {n} x {c.id}: even batch 1 gives TTFT "
            f"{one.ttft:.3f} s, TPOT {one.step:.4f} s (without SLOs: {free_rate:.0f} tok/s/chip)"
        )
        return PerfResult(
            **base,
            **common,
            fits=True,
            meets_slo=False,
            reason=why,
            batch=0,
            ttft_s=one.ttft,
            tpot_s=one.step,
            prefill_tokens_per_s=0.0,
            decode_tokens_per_s=0.0,
            output_tokens_per_s_per_chip=0.0,
            bound=_bound(one, d.consts.step_overhead_s),
            step_compute_s=one.compute,
            step_memory_s=one.memory,
            step_comm_s=one.comm,
            step_moe_dispatch_s=one.moe,
        )
    dec = best.batch / best.step
    return PerfResult(
        **base,
        **common,
        fits=True,
        meets_slo=True,
        reason=None,
        batch=best.batch,
        ttft_s=best.ttft,
        tpot_s=best.step,
        prefill_tokens_per_s=dec * i_t / o_t,
        decode_tokens_per_s=dec,
        output_tokens_per_s_per_chip=dec / n,
        bound=_bound(best, d.consts.step_overhead_s),
        step_compute_s=best.compute,
        step_memory_s=best.memory,
        step_comm_s=best.comm,
        step_moe_dispatch_s=best.moe,
    )


def best_estimate(
    model: ModelArch | str,
    chip: Accelerator | str,
    precision: str,
    input_tokens: int,
    output_tokens: int,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    *,
    tp_degrees: Sequence[int] = TP_DEGREES,
    constants: FamilyConstants | None = None,
) -> PerfResult:
    """:func:`estimate` at the tensor-parallel degree in ``tp_degrees`` with the most goodput per chip.

    If no degree works, the result of the largest degree (its ``reason``) is returned.
    """
    if not tp_degrees:
        raise PhysicsError("tp_degrees must name at least one tensor-parallel degree")
    results = [
        estimate(
            model,
            chip,
            tp,
            precision,
            input_tokens,
            output_tokens,
            ttft_slo_s,
            tpot_slo_s,
            constants=constants,
        )
        for tp in sorted(tp_degrees)
    ]
    good = [r for r in results if r.ok]
    if not good:
        return results[-1]
    return max(good, key=lambda r: r.output_tokens_per_s_per_chip)


def split_degrees(chips: int) -> tuple[int, ...]:
    """Tensor-parallel degrees ``chips`` chips can be split into: powers of two dividing ``chips``, and ``chips``.

    ``split_degrees(8) == (1, 2, 4, 8)``; ``split_degrees(6) == (1, 2, 6)``; ``split_degrees(1) == (1,)``.
    """
    n = _check_int("chips", chips)
    degrees = {n}
    tp = 1
    while tp <= n:
        if n % tp == 0:
            degrees.add(tp)
        tp *= 2
    return tuple(sorted(degrees))


def best_split(
    model: ModelArch | str,
    chip: Accelerator | str,
    chips: int,
    precision: str,
    input_tokens: int,
    output_tokens: int,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    *,
    constants: FamilyConstants | None = None,
) -> PerfResult:
    """Best deployment of ``chips`` chips as ``replicas`` data-parallel copies of a ``tp``-chip TP group.

    A serving engine given ``N`` chips runs ``N/tp`` independent replicas (MLPerf v4.1: TensorRT-LLM
    Llama-2-70B FP8 as TP2 x 4 on 8 x H100 and TP1 x 8 on 8 x H200). Replicas share nothing, so the
    goodput per chip of the split is that of one ``tp`` group; ``tp`` is the degree of
    :func:`split_degrees` with the most goodput per chip among those that fit and meet the SLOs
    (smallest on ties). ``tp = chips`` is always a candidate, so the split is never worse than one
    ``chips``-wide group. If no degree works, the result is the ``tp = chips`` one with its reason.
    """
    n = _check_int("chips", chips)
    r = best_estimate(
        model,
        chip,
        precision,
        input_tokens,
        output_tokens,
        ttft_slo_s,
        tpot_slo_s,
        tp_degrees=split_degrees(n),
        constants=constants,
    )
    replicas = n // r.tp
    return replace(
        r,
        chips=n,
        replicas=replicas,
        prefill_tokens_per_s=r.prefill_tokens_per_s * replicas,
        decode_tokens_per_s=r.decode_tokens_per_s * replicas,
    )


def _as_cases(cases: Mapping[str, Workload] | Sequence[Workload]) -> list[Workload]:
    items = list(cases.values()) if isinstance(cases, Mapping) else list(cases)
    if not items:
        raise PhysicsError("goodput_table needs at least one case")
    for w in items:
        _check_int(f"case '{w.name}' input_tokens", w.input_tokens)
        _check_int(f"case '{w.name}' output_tokens", w.output_tokens)
        _check_slo(f"case '{w.name}' ttft_slo_s", w.ttft_slo_s)
        _check_slo(f"case '{w.name}' tpot_slo_s", w.tpot_slo_s)
    return items


def goodput_table(
    models: Sequence[ModelArch | str] | None = None,
    chips: Sequence[Accelerator | str] | None = None,
    precision_pref: Sequence[str] = ("fp8", "bf16", "fp16", "int8"),
    cases: Mapping[str, Workload] | Sequence[Workload] = DEFAULT_CASES,
    *,
    tp_degrees: Sequence[int] = TP_DEGREES,
) -> xr.DataArray:
    """Output tokens/s per chip meeting each case's SLOs, dims (model, chip, case).

    Per (model, chip) the precision is the first of ``precision_pref`` the chip supports; the
    tensor-parallel degree is the one in ``tp_degrees`` with the highest goodput per chip for
    each case. NaN where the pair cannot run (no supported precision, no fit); 0 where it fits
    but no batch meets the SLOs. Coordinates ``tp`` (0 = none) and ``precision`` ('' = none)
    record the choice. All batches of a deployment are evaluated in one numpy pass and shared
    between cases of equal request shape.
    """
    scen = _default_scenario()
    model_list = [resolve_model(m) for m in (models if models is not None else scen.models)]
    chip_list = [resolve_chip(c) for c in (chips if chips is not None else scen.accelerators)]
    for p in precision_pref:
        _check_precision(p)
    work = _as_cases(cases)
    degrees = sorted({_check_int("tp degree", t) for t in tp_degrees})
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
                for shape, idx in shape_cases.items():
                    reason, _, _, b_max = _memory_check(m, c, n, prec, g, d, shape[0] + shape[1])
                    if reason is not None:
                        continue
                    slos = [(work[k].ttft_slo_s, work[k].tpot_slo_s) for k in idx]
                    for k, o in zip(idx, _best_points(g, d, b_max, shape[0], shape[1], slos), strict=True):
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
