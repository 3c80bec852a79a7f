"""Omni-model costs: modality encoders per input unit, Talker + codec per second of speech.

Rates of a deployment of ``n`` chips with family constants ``e_c``, ``e_bw``, ``t_0``:
``F = n*F_eff*e_c`` (effective tensor rate, :func:`sovcloud.physics.roofline.deployment`) and
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
are costed with :func:`sovcloud.physics.perf.estimate`. Models and chips are catalog entries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from sovcloud.physics.checks import check_chip, check_int, check_model, check_precision, unsupported_reason
from sovcloud.physics.families import FamilyConstants
from sovcloud.physics.roofline import MAX_BATCH, Deployment, deployment
from sovcloud.scenario.catalog import Accelerator, ModelArch, SpeechDecoder

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


@dataclass(frozen=True)
class _Rates:
    """Achieved rates of the deployment: tensor FLOP/s per chip and of all chips, bytes/s, bytes per weight."""

    f_chip: float
    f_dep: float
    bw: float
    bpp: float
    t_0: float

    @classmethod
    def of(cls, d: Deployment) -> _Rates:
        k = d.consts
        f_chip = d.gemm_flops * k.compute_eff
        return cls(f_chip, d.chips * f_chip, d.chips * d.mem_bw * k.bw_eff, d.weight_bytes_per_param,
                   k.step_overhead_s)


def _hosting_reason(m: ModelArch, c: Accelerator, d: Deployment) -> str | None:
    """Why the Thinker, encoders and speech decoder do not all fit in usable memory (None if they do)."""
    k = d.consts
    n = d.chips
    sd = m.speech_decoder
    resident = m.total_params + sum(e.params for e in m.encoders)
    if sd is not None:
        resident += sd.talker_total_params + sd.mtp_params + sd.code2wav_params
    need = resident * d.weight_bytes_per_param
    usable = (1.0 - k.mem_reserve_frac) * n * d.memory_bytes
    if c.mem_bw_tbps is not None and need <= usable:
        return None
    per_chip = ", no device DRAM" if c.mem_bw_tbps is None else f", {k.mem_reserve_frac:.0%} reserved"
    return (
        f"{m.id} cannot be hosted on {n} x {c.id}: Thinker, encoders and speech decoder need "
        f"{need / 1e9:.1f} GB of {d.precision} weights, {usable / 1e9:.3f} GB usable "
        f"({c.memory_gb:g} GB per chip{per_chip})"
    )


def _encoder(m: ModelArch, modality: str, r: _Rates) -> tuple[float, float, float, float]:
    """(tokens per unit, encoder chip-s per unit, prefill chip-s per unit, latency per unit); NaN if absent."""
    e = next((x for x in m.encoders if x.modality == modality), None)
    if e is None:
        return _NAN, _NAN, _NAN, _NAN
    flops = 2.0 * e.params * e.tokens_per_unit
    latency = max(flops / r.f_dep, r.bpp * e.params / r.bw) + r.t_0
    return e.tokens_per_unit, flops / r.f_chip, 2.0 * m.active_params * e.tokens_per_unit / r.f_chip, latency


def _speech(sd: SpeechDecoder, chips: int, r: _Rates) -> tuple[float, float, int, float]:
    """(frame time of one stream, realtime factor, realtime streams, chip-s per second of speech)."""
    b = np.arange(1, MAX_BATCH + 1, dtype=np.float64)
    touched = sd.talker_total_params * -np.expm1(b * np.log1p(-sd.talker_active_params / sd.talker_total_params))
    talker = np.maximum(2.0 * b * sd.talker_active_params / r.f_dep, r.bpp * touched / r.bw)
    mtp = (sd.code_groups - 1) * np.maximum(2.0 * b * sd.mtp_params / r.f_dep, r.bpp * sd.mtp_params / r.bw)
    c2w = np.maximum(2.0 * b * sd.code2wav_params / r.f_dep, r.bpp * sd.code2wav_params / r.bw)
    t_frame = talker + mtp + c2w + r.t_0
    frame_t = float(t_frame[0])
    ok = t_frame <= 1.0 / sd.codec_hz
    streams = int(b[ok][-1]) if ok.any() else 0
    return frame_t, frame_t * sd.codec_hz, streams, chips / streams if streams else math.inf


def omni_costs(
    model: ModelArch,
    chip: Accelerator,
    chips: int,
    precision: str,
    *,
    constants: FamilyConstants | None = None,
) -> OmniCosts:
    """Encoder and speech-generation costs of an omni ``model`` (formulas in the module docstring)."""
    m = check_model(model)
    c = check_chip(chip)
    n = check_int("chips", chips)
    prec = check_precision(precision)
    if not m.encoders and m.speech_decoder is None:
        why = f"{m.id} is not an omni model: it has no modality encoders or speech decoder"
        return _blank(m.id, c.id, n, prec, why)
    if not c.supports(prec):
        return _blank(m.id, c.id, n, prec, unsupported_reason(c, prec))
    d = deployment(c, n, prec, constants)
    why_not = _hosting_reason(m, c, d)
    if why_not is not None:
        return _blank(m.id, c.id, n, prec, why_not)
    r = _Rates.of(d)
    audio, image, video = _encoder(m, "audio", r), _encoder(m, "image", r), _encoder(m, "video", r)
    speech = (_NAN, _NAN, 0, _NAN) if m.speech_decoder is None else _speech(m.speech_decoder, n, r)
    return OmniCosts(m.id, c.id, n, prec, True, None, *audio, *image, *video, *speech)
