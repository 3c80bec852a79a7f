"""Roofline physics of LLM serving: the per-step time of a continuously batched deployment.

Notation (one deployment = ``n`` chips in one tensor-parallel group, serving requests of
``I`` input and ``O`` output tokens with ``B`` sequences in flight):

* ``P_act``, ``P_tot``: active and total parameters; ``b_w`` bytes per weight at the serving
  precision; ``b_kv`` bytes per KV element (fp8 for fp8/fp4 serving, int8 for int8, else 16-bit).
* Steady-state continuous batching: every step advances ``B`` decoding sequences by one token
  and, to replace the ``B/O`` sequences that finish per step, prefills ``B*I/O`` prompt tokens,
  so a step processes ``T = B*(1 + I/O)`` tokens.
* Per-phase roofline, summed over the kernels that run one after another in a step::

      t_gemm  = max(2*P_act*T / (n*F*e_c),  b_w*P_tot / (n*BW*e_bw))      (dense; MoE below)
      t_attn  = max(B*c*a_dec / (n*F_a*e_c), B*c*kv_tok / (n*BW*e_bw)) + B*(I/O)*(I+1)/2*a_pre / (n*F_a*e_c)
      t_kvw   = T*kv_tok / (n*BW*e_bw)
      t_comm  = 2*L*(2*(n-1)/n * T*h*2 / (X*e_x) + lat)       (n > 1; two all-reduces per layer)
      t_step  = t_gemm + t_attn + t_kvw + t_comm + t_moe + t_0

  with ``c = I + (O-1)/2`` the mean context of a decoding sequence, ``a_dec``/``a_pre`` the
  attention FLOPs per (query token, context token) summed over layers (``4*L*H_q*d_head`` for
  GQA/MHA; ``2*L*H_q*(2*r_kv + d_rope)`` for absorbed MLA decode and
  ``2*L*H_q*(d_nope + d_rope + d_v)`` for MLA prefill), ``kv_tok`` the KV bytes per token,
  ``h`` the hidden size, ``X`` the one-direction scale-up bandwidth per chip and ``t_0`` the
  fixed per-step overhead (scheduling, sampling, launches).
* Effective tensor rate at precision p: a share ``s`` of the GEMM work (activation
  quantisation, scaling, epilogues) is not accelerated below 16 bits::

      1/F = (1 - s)/F_p + s/F_16

  Attention runs at the KV precision's rate ``F_a`` (fp8 if the chip has it and the KV cache
  is fp8, else 16-bit).
* Mixture of experts: the routed-expert GEMMs (one grouped GEMM per layer) and the other GEMMs
  are separate kernels, so their rooflines add::

      t_gemm = max(2*P_ne,act*T / (n*F*e_c), b_w*P_ne / (n*BW*e_bw))
             + max(2*k*L_moe*p_e*T / (n*F*e_c), b_w*L_moe*p_e*E*(1 - (1 - k/E)**T) / (n*BW*e_bw))
      t_moe  = T*k*L_moe*c_pair / n

  with ``E*(1-(1-k/E)^T)`` the expected number of distinct experts (of ``E``, ``k`` per token)
  touched by ``T`` tokens in one layer, ``p_e = 3*h*d_moe`` the parameters of one expert,
  ``P_ne`` the non-routed parameters (attention, embeddings, shared experts, dense layers) and
  ``P_ne,act = P_act - k*L_moe*p_e``. ``t_moe`` is the dispatch cost of the routed
  (token, expert) pairs: top-k, permutation into per-expert rows, activation quantisation and
  the weighted un-permute/reduce, ``c_pair`` seconds per pair per MoE layer (a family constant,
  fitted), shared by the ``n`` ranks of expert parallelism. Dense models: ``t_gemm`` is the
  first line with ``P_ne = P_tot`` and ``t_moe = 0``.
* Memory: ``KV budget = (1 - r)*n*M - b_w*P_tot`` and ``B_max = floor(budget / ((I+O)*kv_tok))``
  capped at ``MAX_BATCH`` (each sequence reserves its peak KV, as TensorRT-LLM's default
  GUARANTEED_NO_EVICT scheduler does). The KV cache is taken as partitioned without
  replication across the group (attention data-parallelism for MLA and for ``n > H_kv``).
* Latency: ``TPOT = t_step(B)``; ``TTFT = t_step/2 + max(ceil(I/C)*t_step, t_prefill(I))``:
  half a step of waiting, then the prompt in chunks of ``C = MAX_NUM_TOKENS`` tokens riding
  on the running steps, never faster than prefilling the prompt alone.

The derating constants ``e_c``, ``e_bw``, ``e_x``, ``lat``, ``r``, ``t_0`` and ``c_pair`` are those of the
chip's hardware family (:mod:`sovcloud.physics.families`). Everything here is vectorised over the
batch array ``B``; no Python loop runs per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sovcloud.errors import PhysicsError
from sovcloud.physics.families import FamilyConstants, family_constants
from sovcloud.scenario.catalog import Accelerator, ModelArch
from sovcloud.vocab import PRECISION_BYTES

__all__ = [
    "ACTIVATION_BYTES",
    "LOW_PRECISION_SHARE",
    "MAX_BATCH",
    "MAX_NUM_TOKENS",
    "Deployment",
    "Geometry",
    "StepTimes",
    "deployment",
    "expected_distinct_experts",
    "expert_read_bytes",
    "gemm_time",
    "geometry",
    "kv_precision_for",
    "moe_dispatch_time",
    "prefill_time",
    "step_times",
    "weight_read_bytes",
]

FloatArray = npt.NDArray[np.float64]

#: Bytes per activation element exchanged by the tensor-parallel all-reduces (bf16).
ACTIVATION_BYTES = 2.0
#: Most sequences one replica (TP group) keeps in flight: an engine setting, not physics.
#: 512 as in NVIDIA's H200 Llama-70B TensorRT-LLM run (TensorRT-LLM docs/source/blogs/H200launch.md,
#: "batch 512"; a calibration row) and within vLLM's max_num_seqs defaults (256-1024).
MAX_BATCH = 512
#: Prompt tokens one step may prefill (TensorRT-LLM / vLLM default ``max_num_tokens`` 8192).
MAX_NUM_TOKENS = 8192
#: Share ``s`` of GEMM work that stays at 16-bit speed when weights/activations are 8- or
#: 4-bit: with s = 0.25 fp8 is 1.6x bf16 when compute-bound, the speed-up reported for
#: Llama-3.x-70B on H100 (fastpriors.com/blog/fp8-inference-h100: 1.6x; NVIDIA quotes 1.6-1.8x).
LOW_PRECISION_SHARE = 0.25


@dataclass(frozen=True)
class Geometry:
    """Per-token FLOP and byte counts of a model, derived from its architecture."""

    model_id: str
    layers: int
    hidden: int
    total_params: float
    active_params: float
    nonexpert_params: float
    expert_params: float  # parameters of one routed expert in one layer
    experts: int
    experts_per_token: int
    moe_layers: int
    routed_active_params: float  # k*L_moe*p_e: expert parameters one token runs through
    attn_flops_decode: float  # per (query token, context token), all layers
    attn_flops_prefill: float
    kv_elements_per_token: int
    context_length: int


def geometry(model: ModelArch) -> Geometry:
    """Split ``model`` into routed-expert and other parameters and count attention FLOPs.

    ``p_e = 3*h*d_moe`` (gate, up, down); routed = ``E*(L - L_dense)*p_e``; the rest
    (attention, embeddings, shared experts, dense layers) is read every step. A token runs
    through ``k*(L - L_dense)*p_e`` routed parameters (``routed_active_params``).
    """
    layers = model.layers
    moe_layers = max(layers - model.dense_layers, 0) if model.is_moe else 0
    expert_params = 3.0 * model.hidden_size * float(model.moe_intermediate_size or 0) if model.is_moe else 0.0
    routed = model.experts * moe_layers * expert_params
    if routed > model.total_params:
        raise PhysicsError(
            f"model '{model.id}': routed experts ({routed / 1e9:.1f}B params from experts x layers x 3 x "
            f"hidden x moe_intermediate_size) exceed total_params ({model.total_params / 1e9:.1f}B)"
        )
    routed_active = min(float(model.experts_per_token * moe_layers) * expert_params, model.active_params)
    if model.mla is not None:
        mla = model.mla
        a_dec = 2.0 * layers * model.q_heads * (2 * mla.kv_lora_rank + mla.qk_rope_head_dim)
        a_pre = 2.0 * layers * model.q_heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim)
    else:
        head_dim = model.head_dim or model.hidden_size // model.q_heads
        a_dec = a_pre = 4.0 * layers * model.q_heads * head_dim
    return Geometry(
        model_id=model.id,
        layers=layers,
        hidden=model.hidden_size,
        total_params=model.total_params,
        active_params=model.active_params,
        nonexpert_params=model.total_params - routed,
        expert_params=expert_params,
        experts=model.experts,
        experts_per_token=model.experts_per_token,
        moe_layers=moe_layers,
        routed_active_params=routed_active,
        attn_flops_decode=a_dec,
        attn_flops_prefill=a_pre,
        kv_elements_per_token=model.kv_elements_per_token(),
        context_length=model.context_length,
    )


def kv_precision_for(precision: str) -> str:
    """KV-cache precision served with weight precision ``precision`` (fp8 KV for fp8/fp4, as TensorRT-LLM)."""
    if precision in ("fp8", "fp4"):
        return "fp8"
    if precision == "int8":
        return "int8"
    return precision


@dataclass(frozen=True)
class Deployment:
    """Rates of one tensor-parallel group of ``chips`` identical chips at one precision."""

    chip_id: str
    chips: int
    precision: str
    kv_precision: str
    gemm_flops: float  # effective dense rate per chip, FLOP/s (before compute_eff)
    attn_flops: float
    mem_bw: float  # bytes/s per chip (before bw_eff)
    link_bw: float  # bytes/s per chip, one direction
    memory_bytes: float  # per chip
    weight_bytes_per_param: float
    kv_bytes_per_element: float
    consts: FamilyConstants


def deployment(
    chip: Accelerator, chips: int, precision: str, consts: FamilyConstants | None = None
) -> Deployment:
    """Rates for ``chips`` x ``chip`` at ``precision`` (which the chip must support).

    ``F = 1/((1-s)/F_p + s/F_16)``; ``F_a`` = fp8 rate when the KV cache is fp8 and the chip has
    fp8, else the 16-bit rate.
    """
    if precision not in chip.tflops:
        raise PhysicsError(f"{chip.id} does not support {precision}")
    f_p = chip.tflops[precision] * 1e12
    f_16_t = chip.tflops.get("bf16") or chip.tflops.get("fp16")
    f_16 = f_16_t * 1e12 if f_16_t else f_p
    if precision in ("bf16", "fp16") or f_16 >= f_p:
        gemm = f_p
    else:
        gemm = 1.0 / ((1.0 - LOW_PRECISION_SHARE) / f_p + LOW_PRECISION_SHARE / f_16)
    kv_prec = kv_precision_for(precision)
    f_fp8 = chip.tflops.get("fp8")
    attn = f_fp8 * 1e12 if (kv_prec == "fp8" and f_fp8) else f_16
    return Deployment(
        chip_id=chip.id,
        chips=chips,
        precision=precision,
        kv_precision=kv_prec,
        gemm_flops=gemm,
        attn_flops=attn,
        mem_bw=(chip.mem_bw_tbps or 0.0) * 1e12,
        link_bw=chip.interconnect_gbps * 1e9,
        memory_bytes=chip.memory_gb * 1e9,
        weight_bytes_per_param=PRECISION_BYTES[precision],
        kv_bytes_per_element=PRECISION_BYTES[kv_prec],
        consts=consts if consts is not None else family_constants(chip.family),
    )


def expected_distinct_experts(experts: int, per_token: int, tokens: FloatArray | float) -> FloatArray:
    """``E*(1 - (1 - k/E)**T)``: expected distinct experts of one layer touched by ``T`` routed tokens.

    Uniform independent routing; 0 for a dense model. Increases with ``T`` towards ``E``.
    """
    t = np.asarray(tokens, dtype=np.float64)
    if experts <= 0:
        return np.zeros_like(t)
    if per_token >= experts:
        return np.full_like(t, float(experts))
    out: FloatArray = experts * -np.expm1(t * np.log1p(-per_token / experts))
    return out


def weight_read_bytes(g: Geometry, d: Deployment, tokens: FloatArray) -> FloatArray:
    """Weight bytes read by a forward step over ``tokens`` tokens (all resident, touched experts read)."""
    return np.full_like(tokens, g.nonexpert_params * d.weight_bytes_per_param) + expert_read_bytes(g, d, tokens)


def expert_read_bytes(g: Geometry, d: Deployment, tokens: FloatArray) -> FloatArray:
    """Routed-expert weight bytes read by a step over ``tokens`` tokens (0 for a dense model)."""
    if g.experts == 0:
        return np.zeros_like(tokens)
    distinct = expected_distinct_experts(g.experts, g.experts_per_token, tokens)
    out: FloatArray = d.weight_bytes_per_param * g.moe_layers * g.expert_params * distinct
    return out


def gemm_time(g: Geometry, d: Deployment, tokens: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(compute-bound part, memory-bound part) of the GEMMs of a step over ``tokens`` tokens.

    Two kernels per layer whose rooflines add: the non-routed GEMMs
    ``max(2*P_ne,act*T / F, b_w*P_ne / BW)`` and the routed-expert grouped GEMM
    ``max(2*k*L_moe*p_e*T / F, expert bytes read / BW)``; each term is reported on the side
    (compute or memory) that binds it. A dense model has only the first kernel.
    """
    c = d.consts
    flops = d.chips * d.gemm_flops * c.compute_eff
    bw = d.chips * d.mem_bw * c.bw_eff
    ne_c = (2.0 * (g.active_params - g.routed_active_params) / flops) * tokens
    ne_m = g.nonexpert_params * d.weight_bytes_per_param / bw
    ne_bound = ne_c >= ne_m
    compute: FloatArray = np.where(ne_bound, ne_c, 0.0)
    memory: FloatArray = np.where(ne_bound, 0.0, ne_m)
    if g.routed_active_params > 0.0:
        ex_c = (2.0 * g.routed_active_params / flops) * tokens
        ex_m = expert_read_bytes(g, d, tokens) / bw
        ex_bound = ex_c >= ex_m
        compute = compute + np.where(ex_bound, ex_c, 0.0)
        memory = memory + np.where(ex_bound, 0.0, ex_m)
    return compute, memory


def moe_dispatch_time(g: Geometry, d: Deployment, tokens: FloatArray) -> FloatArray:
    """``T*k*L_moe*c_pair / n``: dispatch time of the routed (token, expert) pairs of a step (0 if dense)."""
    pairs = tokens * float(g.experts_per_token * g.moe_layers) if g.experts else np.zeros_like(tokens)
    out: FloatArray = pairs * d.consts.moe_pair_s / d.chips
    return out


def kv_bytes_per_token(g: Geometry, d: Deployment) -> float:
    """``kv_tok``: KV-cache bytes one token adds at the deployment's KV precision."""
    return g.kv_elements_per_token * d.kv_bytes_per_element


def _comm_time(g: Geometry, d: Deployment, tokens: FloatArray) -> FloatArray:
    n = d.chips
    if n <= 1:
        return np.zeros_like(tokens)
    c = d.consts
    if d.link_bw <= 0:
        return np.full_like(tokens, np.inf)
    ring = 2.0 * (n - 1) / n
    per_allreduce = (
        ring * tokens * g.hidden * ACTIVATION_BYTES / (d.link_bw * c.link_eff) + c.allreduce_latency_s
    )
    return 2.0 * g.layers * per_allreduce


@dataclass(frozen=True)
class StepTimes:
    """Per-step time components (seconds), one entry per batch size in ``batch``."""

    batch: FloatArray
    compute: FloatArray  # binding compute-side terms (GEMM and attention when compute-bound)
    memory: FloatArray  # binding memory-side terms (weights, KV reads and writes)
    comm: FloatArray
    moe_dispatch: FloatArray  # routed-pair dispatch (0 for dense models)
    overhead: float
    step: FloatArray
    ttft: FloatArray


def prefill_time(g: Geometry, d: Deployment, tokens: int) -> float:
    """Time to prefill one prompt of ``tokens`` tokens alone (TTFT floor), seconds.

    The step roofline with ``T = tokens`` and no decoding sequences (scalar arithmetic).
    """
    c = d.consts
    n = d.chips
    t = float(tokens)
    flops = n * d.gemm_flops * c.compute_eff
    bw = n * d.mem_bw * c.bw_eff
    b_w = d.weight_bytes_per_param
    gemm = max(2.0 * (g.active_params - g.routed_active_params) * t / flops, g.nonexpert_params * b_w / bw)
    moe = 0.0
    if g.routed_active_params > 0.0:
        distinct = float(expected_distinct_experts(g.experts, g.experts_per_token, t))
        gemm += max(2.0 * g.routed_active_params * t / flops, b_w * g.moe_layers * g.expert_params * distinct / bw)
        moe = t * g.experts_per_token * g.moe_layers * c.moe_pair_s / n
    attn = t * (t + 1.0) / 2.0 * g.attn_flops_prefill / (n * d.attn_flops * c.compute_eff)
    kvw = t * kv_bytes_per_token(g, d) / bw
    comm = 0.0
    if n > 1:
        comm = float(_comm_time(g, d, np.array([t]))[0])
    chunks = int(np.ceil(tokens / MAX_NUM_TOKENS))
    return gemm + attn + kvw + comm + moe + chunks * c.step_overhead_s


def step_times(
    g: Geometry, d: Deployment, batch: FloatArray, input_tokens: int, output_tokens: int
) -> StepTimes:
    """Step time, TPOT and TTFT of the steady continuous-batching mix for every batch in ``batch``."""
    c = d.consts
    n = d.chips
    i_t = float(input_tokens)
    o_t = float(output_tokens)
    r = i_t / o_t
    tokens = batch * (1.0 + r)
    attn_rate = n * d.attn_flops * c.compute_eff
    bw = n * d.mem_bw * c.bw_eff
    kv_tok = kv_bytes_per_token(g, d)

    gemm_c, gemm_m = gemm_time(g, d, tokens)
    ctx = i_t + (o_t - 1.0) / 2.0
    dec_c = batch * ctx * g.attn_flops_decode / attn_rate
    dec_m = batch * ctx * kv_tok / bw
    pre_c = batch * r * (i_t + 1.0) / 2.0 * g.attn_flops_prefill / attn_rate
    kvw_m = tokens * kv_tok / bw
    comm = _comm_time(g, d, tokens)
    moe = moe_dispatch_time(g, d, tokens)

    dec_bound = dec_c >= dec_m
    compute = gemm_c + np.where(dec_bound, dec_c, 0.0) + pre_c
    memory = gemm_m + np.where(dec_bound, 0.0, dec_m) + kvw_m
    step = compute + memory + comm + c.step_overhead_s
    if g.experts:
        step = step + moe
    chunks = float(np.ceil(i_t / MAX_NUM_TOKENS))
    ttft = 0.5 * step + np.maximum(chunks * step, prefill_time(g, d, input_tokens))
    return StepTimes(
        batch=batch,
        compute=compute,
        memory=memory,
        comm=comm,
        moe_dispatch=moe,
        overhead=c.step_overhead_s,
        step=step,
        ttft=ttft,
    )
