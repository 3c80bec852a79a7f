"""Batch capacity and batch choice of one deployment (a tensor-parallel group of ``n`` chips).

Capacity: with weights ``W = b_w*P_tot``, KV bytes of one sequence ``kv_seq = (I+O)*kv_tok`` and
usable memory ``(1-r)*n*M``, the KV budget is ``(1-r)*n*M - W`` and::

    B_max = min(MAX_BATCH, floor(budget / kv_seq))

A deployment cannot run (a reason, ``B_max = 0``) when the chip has no device DRAM, when ``n > 1``
chips have no scale-up interconnect, when ``I+O`` exceeds the model's context length, or when the
budget holds less than one sequence.

Choice: for every ``B = 1..B_max`` at once (one numpy pass of
:func:`~sovcloud.physics.roofline.step_times`), the batch maximising the decode rate ``B / t_step(B)``
among those with ``TTFT(B) <= SLO_ttft`` and ``t_step(B) <= SLO_tpot`` (an absent SLO holds for every
batch; ties go to the smallest batch). When no batch meets the SLOs the point of batch 1 is
returned, marked as not meeting them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sovcloud.physics.roofline import MAX_BATCH, Deployment, Geometry, step_times
from sovcloud.scenario.catalog import Accelerator, ModelArch

__all__ = ["Capacity", "OperatingPoint", "best_points", "capacity"]


@dataclass(frozen=True)
class Capacity:
    """How many sequences of one request shape a deployment holds, or why it cannot run.

    ``reason`` is None when the deployment runs; ``max_batch`` is then ``B_max`` (else 0).
    """

    reason: str | None
    kv_budget_bytes: float
    kv_bytes_per_sequence: float
    max_batch: int


@dataclass(frozen=True)
class OperatingPoint:
    """One batch of a deployment: its step time, TTFT and step components (seconds)."""

    batch: int
    step: float
    ttft: float
    compute: float
    memory: float
    comm: float
    moe: float
    meets: bool

    def bound(self, overhead: float) -> str:
        """The largest step component: compute, memory, communication, moe-dispatch or overhead."""
        parts = {
            "compute": self.compute,
            "memory": self.memory,
            "communication": self.comm,
            "moe-dispatch": self.moe,
            "overhead": overhead,
        }
        return max(parts, key=lambda k: parts[k])


def capacity(
    model: ModelArch,
    chip: Accelerator,
    chips: int,
    precision: str,
    g: Geometry,
    d: Deployment,
    seq_tokens: int,
) -> Capacity:
    """KV budget, KV bytes per sequence of ``seq_tokens`` tokens and ``B_max`` (or the reason it cannot run)."""
    weights = g.total_params * d.weight_bytes_per_param
    kv_seq = seq_tokens * g.kv_elements_per_token * d.kv_bytes_per_element
    total = chips * d.memory_bytes
    usable = (1.0 - d.consts.mem_reserve_frac) * total
    budget = usable - weights
    gb = 1e9
    why: str | None = None
    if chip.mem_bw_tbps is None:
        why = (
            f"{chip.id} cannot host {model.id}: it has {chip.memory_gb * 1e3:.0f} MB of on-chip memory "
            f"per chip and no device DRAM ({chips} chip(s): {total / gb:.3f} GB), while {model.id} needs "
            f"{weights / gb:.1f} GB of {precision} weights plus KV cache, which would have to stream over "
            f"{chip.interconnect_gbps:.0f} GB/s host links"
        )
    elif chips > 1 and chip.interconnect_gbps <= 0:
        why = f"{chip.id} has no scale-up interconnect (interconnect_gbps 0) for tensor parallelism"
    elif seq_tokens > g.context_length:
        why = f"{seq_tokens} tokens per sequence exceed {model.id}'s context length {g.context_length}"
    elif budget < kv_seq:
        why = (
            f"{model.id} does not fit on {chips} x {chip.id}: it needs {(weights + kv_seq) / gb:.1f} GB "
            f"({weights / gb:.1f} GB of {precision} weights + {kv_seq / gb:.2f} GB KV cache for one "
            f"{seq_tokens}-token sequence) but only {usable / gb:.1f} GB are usable ({total / gb:.0f} GB "
            f"less {d.consts.mem_reserve_frac:.0%} reserved for activations and runtime)"
        )
    if why is not None:
        return Capacity(why, budget, kv_seq, 0)
    return Capacity(None, budget, kv_seq, int(min(MAX_BATCH, budget // kv_seq)))


def best_points(
    g: Geometry,
    d: Deployment,
    b_max: int,
    input_tokens: int,
    output_tokens: int,
    slos: Sequence[tuple[float | None, float | None]],
) -> list[OperatingPoint]:
    """The best batch of ``1..b_max`` for each (TTFT SLO, TPOT SLO) pair of ``slos``, from one array pass."""
    batch = np.arange(1, b_max + 1, dtype=np.float64)
    st = step_times(g, d, batch, input_tokens, output_tokens)
    rate = batch / st.step
    out: list[OperatingPoint] = []
    for ttft_slo, tpot_slo in slos:
        ok = np.ones(batch.shape, dtype=bool)
        if ttft_slo is not None:
            ok &= st.ttft <= ttft_slo
        if tpot_slo is not None:
            ok &= st.step <= tpot_slo
        meets = bool(ok.any())
        i = int(np.argmax(np.where(ok, rate, -1.0))) if meets else 0
        out.append(
            OperatingPoint(
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
