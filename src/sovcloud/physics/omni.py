"""Omni-model costs: modality encoders per input unit, Talker + codec per second of speech.

Rates of a deployment of ``n`` chips with family constants ``e_c``, ``e_bw``, ``t_0``:
``F = n*F_eff*e_c`` (effective tensor rate, :func:`sovcloud.roofline.deployment`) and
``BW = n*BW_mem*e_bw``.

Encoders (modality m with ``P_m`` parameters and ``u_m`` tokens per unit: per second of audio,
per image, per video frame)::

    encoder chip-seconds per unit  = 2*P_m*u_m / (F_eff*e_c)            (batched, compute-bound)
    prefill chip-seconds per unit  = 2*P_act*u_m / (F_eff*e_c)          (Thinker prefill of u_m tokens)
    encoder latency per unit       = max(2*P_m*u_m/F, b_w*P_m/BW) + t_0 (one request alone)

Speech (codec at ``f`` frames/s with ``G`` code groups): per frame and per stream the Talker
(``P_tk`` active of ``P_tt`` total) runs once, the MTP module (``P_mtp``) ``G-1`` times in sequence,
Code2Wav (``P_c2w``) once. For ``B`` concurrent streams, all batches at once::

    t_frame(B) = max(2*B*P_tk/F, b_w*R(B)/BW) + (G-1)*max(2*B*P_mtp/F, b_w*P_mtp/BW)
                 + max(2*B*P_c2w/F, b_w*P_c2w/BW) + t_0
    R(B)       = P_tt*(1 - (1 - P_tk/P_tt)**B)      (Talker weights touched by B tokens)

    realtime factor (one stream)      = f * t_frame(1)   (< 1: faster than real time)
    realtime streams per deployment   = max {B : t_frame(B) <= 1/f}
    chip-seconds per second of speech = n / streams

Assumptions: encoder FLOPs are ``2*P_m`` per output token (transformer encoder); Code2Wav is
costed as a ``P_c2w``-parameter network run once per frame (a lower bound for a convolutional
vocoder); Talker/MTP KV-cache traffic is neglected (tiny models); the Thinker's own text tokens
are costed with :func:`sovcloud.perf.estimate`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from sovcloud.physics.perf import _check_int, _check_precision, _unsupported_reason, resolve_chip, resolve_model
from sovcloud.physics.roofline import MAX_BATCH, FamilyConstants, deployment
from sovcloud.scenario.catalog import Accelerator, ModelArch

__all__ = ["OmniCosts", "omni_costs"]


@dataclass(frozen=True)
class OmniCosts:
    """Costs of an omni model's encoders and speech decoder on ``chips`` x ``chip`` (see module doc).

    Chip-seconds are per chip at full batching; latencies are for one request on the whole
    deployment. Fields are NaN (None in JSON) when ``ok`` is False or the model lacks the part.
    """

    model: str
    chip: str
    chips: int
    precision: str
    ok: bool
    reason: str | None
    audio_tokens_per_s: float
    audio_encoder_chip_s_per_audio_s: float
    audio_prefill_chip_s_per_audio_s: float
    audio_encoder_latency_s_per_audio_s: float
    image_tokens: float
    image_encoder_chip_s_per_image: float
    image_prefill_chip_s_per_image: float
    image_encoder_latency_s: float
    video_tokens_per_frame: float
    video_encoder_chip_s_per_frame: float
    video_prefill_chip_s_per_frame: float
    video_encoder_latency_s_per_frame: float
    speech_frame_time_s: float
    realtime_factor: float
    realtime_streams: int
    speech_chip_s_per_speech_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


_NAN = float("nan")


def _blank(model: str, chip: str, chips: int, precision: str, reason: str) -> OmniCosts:
    """A result that says why there are no figures: every measure NaN, no realtime streams."""
    values: dict[str, object] = {f.name: _NAN for f in fields(OmniCosts)}
    values.update(model=model, chip=chip, chips=chips, precision=precision, ok=False, reason=reason,
                  realtime_streams=0)
    return OmniCosts(**values)  # type: ignore[arg-type]


def omni_costs(
    model: ModelArch | str,
    chip: Accelerator | str,
    chips: int,
    precision: str,
    *,
    constants: FamilyConstants | None = None,
) -> OmniCosts:
    """Encoder and speech-generation costs of an omni ``model`` (formulas in the module docstring)."""
    m = resolve_model(model)
    c = resolve_chip(chip)
    n = _check_int("chips", chips)
    prec = _check_precision(precision)
    if not m.encoders and m.speech_decoder is None:
        why = f"{m.id} is not an omni model: it has no modality encoders or speech decoder"
        return _blank(m.id, c.id, n, prec, why)
    if not c.supports(prec):
        return _blank(m.id, c.id, n, prec, _unsupported_reason(c, prec))
    d = deployment(c, n, prec, constants)
    k = d.consts
    sd = m.speech_decoder
    resident = m.total_params + sum(e.params for e in m.encoders)
    if sd is not None:
        resident += sd.talker_total_params + sd.mtp_params + sd.code2wav_params
    need = resident * d.weight_bytes_per_param
    usable = (1.0 - k.mem_reserve_frac) * n * d.memory_bytes
    if c.mem_bw_tbps is None or need > usable:
        per_chip = ", no device DRAM" if c.mem_bw_tbps is None else f", {k.mem_reserve_frac:.0%} reserved"
        why = (
            f"{m.id} cannot be hosted on {n} x {c.id}: Thinker, encoders and speech decoder need "
            f"{need / 1e9:.1f} GB of {prec} weights, {usable / 1e9:.3f} GB usable "
            f"({c.memory_gb:g} GB per chip{per_chip})"
        )
        return _blank(m.id, c.id, n, prec, why)
    f_chip = d.gemm_flops * k.compute_eff
    f_dep = n * f_chip
    bw = n * d.mem_bw * k.bw_eff
    bpp = d.weight_bytes_per_param

    def enc(modality: str) -> tuple[float, float, float, float]:
        e = next((x for x in m.encoders if x.modality == modality), None)
        if e is None:
            return _NAN, _NAN, _NAN, _NAN
        flops = 2.0 * e.params * e.tokens_per_unit
        latency = max(flops / f_dep, bpp * e.params / bw) + k.step_overhead_s
        return e.tokens_per_unit, flops / f_chip, 2.0 * m.active_params * e.tokens_per_unit / f_chip, latency

    audio, image, video = enc("audio"), enc("image"), enc("video")
    frame_t, rtf, streams, chip_s = _NAN, _NAN, 0, _NAN
    if sd is not None:
        b = np.arange(1, MAX_BATCH + 1, dtype=np.float64)
        touched = sd.talker_total_params * -np.expm1(
            b * np.log1p(-sd.talker_active_params / sd.talker_total_params)
        )
        talker = np.maximum(2.0 * b * sd.talker_active_params / f_dep, bpp * touched / bw)
        mtp = (sd.code_groups - 1) * np.maximum(2.0 * b * sd.mtp_params / f_dep, bpp * sd.mtp_params / bw)
        c2w = np.maximum(2.0 * b * sd.code2wav_params / f_dep, bpp * sd.code2wav_params / bw)
        t_frame = talker + mtp + c2w + k.step_overhead_s
        frame_t = float(t_frame[0])
        rtf = frame_t * sd.codec_hz
        ok = t_frame <= 1.0 / sd.codec_hz
        streams = int(b[ok][-1]) if ok.any() else 0
        chip_s = n / streams if streams else math.inf
    return OmniCosts(
        m.id,
        c.id,
        n,
        prec,
        True,
        None,
        audio[0],
        audio[1],
        audio[2],
        audio[3],
        image[0],
        image[1],
        image[2],
        image[3],
        video[0],
        video[1],
        video[2],
        video[3],
        frame_t,
        rtf,
        streams,
        chip_s,
    )
