"""Omni-model encoder and speech costs (sovcloud.physics.omni)."""

from __future__ import annotations

import json
import math

import pytest

from sovcloud.physics.omni import omni_costs
from tests.physics.catalog import SC


def test_omni_costs_plan_realtime_voice() -> None:
    omni = SC.model("qwen3-omni-30b-a3b")
    c = omni_costs(omni, SC.chip("h100-sxm"), 1, "fp8")
    assert c.ok and c.reason is None
    assert c.audio_tokens_per_s == 12.5 and c.image_tokens == 256 and c.video_tokens_per_frame == 64
    assert 0 < c.audio_encoder_chip_s_per_audio_s < c.audio_prefill_chip_s_per_audio_s
    per_image = 256 / 12.5 * c.audio_encoder_chip_s_per_audio_s * 540 / 650  # 2*P*tokens scaling
    assert c.image_encoder_chip_s_per_image == pytest.approx(per_image)
    assert 0 < c.realtime_factor < 1 and c.realtime_streams >= 1
    assert c.speech_chip_s_per_speech_s == pytest.approx(1 / c.realtime_streams)
    slower = omni_costs(omni, SC.chip("h20"), 1, "fp8")
    assert slower.audio_encoder_chip_s_per_audio_s > c.audio_encoder_chip_s_per_audio_s
    json.dumps(c.to_json(), allow_nan=False)
    assert "not an omni model" in (omni_costs(SC.model("llama-2-70b"), SC.chip("h100-sxm"), 1, "fp8").reason or "")
    nope = omni_costs(omni, SC.chip("hanguang-800"), 1, "int8")
    assert not nope.ok and "no device DRAM" in (nope.reason or "")
    assert math.isnan(nope.realtime_factor)


def test_omni_costs_refuse_unsupported_precision_and_small_memory() -> None:
    omni = SC.model("qwen3-omni-30b-a3b")
    a100 = SC.chip("a100-80gb-sxm")
    unsupported = omni_costs(omni, a100, 1, "fp8")
    assert not unsupported.ok
    assert unsupported.reason == f"a100-80gb-sxm has no fp8 tensor cores; supported: {', '.join(a100.tflops)}"
    small = a100.model_copy(update={"memory_gb": 8.0})
    tight = omni_costs(omni, small, 1, "bf16")
    assert not tight.ok and "cannot be hosted on 1 x a100-80gb-sxm" in (tight.reason or "")
    assert "10% reserved" in (tight.reason or "") and tight.realtime_streams == 0
    assert math.isnan(tight.audio_encoder_chip_s_per_audio_s)
