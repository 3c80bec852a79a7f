"""Parallel split of a system of chips: the tensor-parallel degree and the data-parallel replicas.

A serving engine given ``N`` chips runs ``N/tp`` independent replicas of one ``tp``-chip
tensor-parallel group (MLPerf v4.1: TensorRT-LLM Llama-2-70B FP8 as TP2 x 4 on 8 x H100 and
TP1 x 8 on 8 x H200). Replicas share nothing, so the goodput per chip of a split is that of one
group (:func:`sovcloud.physics.perf.estimate`). The candidate degrees of ``N`` chips are the powers
of two dividing ``N``, and ``N`` itself (:func:`split_degrees`); the chosen degree has the most
goodput per chip among those that fit and meet the SLOs, the smallest on ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sovcloud.errors import PhysicsError
from sovcloud.physics.checks import check_int
from sovcloud.physics.families import FamilyConstants
from sovcloud.physics.perf import TP_DEGREES, PerfResult, estimate
from sovcloud.scenario.catalog import Accelerator, ModelArch

__all__ = ["best_estimate", "best_split", "split_degrees"]


def best_estimate(
    model: ModelArch,
    chip: Accelerator,
    precision: str,
    input_tokens: int,
    output_tokens: int,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    *,
    tp_degrees: Sequence[int] = TP_DEGREES,
    constants: FamilyConstants | None = None,
) -> PerfResult:
    """:func:`~sovcloud.physics.perf.estimate` at the degree in ``tp_degrees`` with the most goodput per chip.

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
    n = check_int("chips", chips)
    degrees = {n}
    tp = 1
    while tp <= n:
        if n % tp == 0:
            degrees.add(tp)
        tp *= 2
    return tuple(sorted(degrees))


def best_split(
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
    """Best deployment of ``chips`` chips as ``replicas`` data-parallel copies of a ``tp``-chip TP group.

    ``tp`` is the degree of :func:`split_degrees` with the most goodput per chip among those that fit
    and meet the SLOs (smallest on ties; module docstring). ``tp = chips`` is always a candidate, so the
    split is never worse than one ``chips``-wide group. If no degree works, the result is the
    ``tp = chips`` one with its reason. The prefill and decode rates are of all replicas.
    """
    n = check_int("chips", chips)
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
