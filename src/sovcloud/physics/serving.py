"""The serving model of one deployment: the engine's batch cap and the affine step time at it.

One deployment is ``replicas`` engines of ``tp`` chips, each a continuous-batching server of up to
``max_batch`` concurrent sequences. The batch cap is the operating point an operator sets (vLLM's
``max_num_seqs``): the batch of :func:`sovcloud.physics.perf.estimate` under the strictest TTFT/TPOT
targets of the workloads that share the deployment, at the model's typical request shape (the memory
limit when no batch meets them). At that cap the engine is modelled as::

    prefill_s(I)  = prefill_time(I_typ) * I / I_typ        (one prompt alone, linear in its length)
    tpot_s(b)     = tpot0 + tpot1 * b,  b in [1, max_batch] (affine through the roofline steps at 1 and max_batch)
    service_s     = prefill_s(I) + O * tpot_s(b)            (time a request of I in / O out holds a slot)

and a deployment of ``slots = replicas * max_batch`` slots, all busy, completes ``slots / service_s``
requests per second. The simulator, the gateway's queueing estimate and the planner's capacity per
chip all use this one model (:func:`serving_point`, :meth:`ServingPoint.tokens_per_s_per_chip`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sovcloud.physics.perf import estimate
from sovcloud.physics.roofline import deployment, geometry, prefill_time, step_times
from sovcloud.scenario.catalog import Accelerator, ModelArch

__all__ = ["PRECISION_PREFERENCE", "ServingPoint", "precision_for", "serving_point"]

#: precision a deployment runs at: the first of these its chip supports
PRECISION_PREFERENCE = ("fp8", "bf16", "fp16", "int8")


def precision_for(chip: Accelerator) -> str | None:
    """The precision a deployment on ``chip`` runs at (None: the chip supports none of them)."""
    return next((p for p in PRECISION_PREFERENCE if chip.supports(p)), None)


@dataclass(frozen=True)
class ServingPoint:
    """One engine (``tp`` chips) at its batch cap, at the typical request shape it was evaluated at."""

    tp: int
    precision: str
    max_batch: int  # concurrent sequences per engine
    meets_slo: bool  # some batch met the strictest targets (False: the cap is the memory limit)
    input_tokens: float  # the typical request shape
    output_tokens: float
    prefill_s: float  # one typical prompt alone
    tpot0_s: float
    tpot1_s: float

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.input_tokens / self.prefill_s

    def tpot_s(self, batch: float) -> float:
        """TPOT at per-engine batch ``batch`` (clipped to [1, max_batch])."""
        return self.tpot0_s + self.tpot1_s * min(max(batch, 1.0), float(self.max_batch))

    def service_s(self, input_tokens: float, output_tokens: float, batch: float | None = None) -> float:
        """Time a request holds a slot at per-engine batch ``batch`` (default: the cap, a full engine)."""
        b = float(self.max_batch) if batch is None else batch
        return input_tokens / self.prefill_tokens_per_s + output_tokens * self.tpot_s(b)

    def tokens_per_s_per_chip(self, input_tokens: float, output_tokens: float) -> float:
        """Input + output tokens per second per chip of a full engine serving requests of this shape."""
        return self.max_batch / self.tp * (input_tokens + output_tokens) / self.service_s(input_tokens, output_tokens)


def serving_point(model: ModelArch, chip: Accelerator, tp: int, input_tokens: float, output_tokens: float,
                  ttft_slo_s: float | None, tpot_slo_s: float | None) -> ServingPoint | None:
    """The engine of ``tp`` x ``chip`` serving ``model`` (see module docstring); None if it cannot run."""
    prec = precision_for(chip)
    if prec is None or tp < 1:
        return None
    i_t, o_t = max(1, round(input_tokens)), max(1, round(output_tokens))
    op = estimate(model, chip, tp, prec, i_t, o_t, ttft_slo_s, tpot_slo_s)
    if not op.fits:
        return None
    big = max(1, int(op.batch if op.meets_slo and op.batch >= 1 else op.max_batch))
    g, d = geometry(model), deployment(chip, tp, prec)
    pre = prefill_time(g, d, i_t)
    st = step_times(g, d, np.array([1.0, float(max(big, 2))]), i_t, o_t)
    t1 = float(st.step[1] - st.step[0]) / (max(big, 2) - 1.0)
    return ServingPoint(tp=tp, precision=prec, max_batch=big, meets_slo=bool(op.meets_slo),
                        input_tokens=float(input_tokens), output_tokens=float(output_tokens), prefill_s=pre,
                        tpot0_s=float(st.step[0]) - t1, tpot1_s=t1)
