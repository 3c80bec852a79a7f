"""Accelerator and model catalog records.

An :class:`Accelerator` carries what a roofline model needs (dense throughput by precision,
memory capacity and bandwidth, scale-up interconnect, power) and what a planner needs (unit
price, server size, supply per period). A :class:`ModelArch` carries the architecture of a
served model: enough to count weight bytes, KV-cache bytes and FLOPs per token, including
mixture-of-experts, multi-head latent attention and the encoders/speech decoder of omni models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from sovcloud.errors import PhysicsError
from sovcloud.scenario.entity import Entity, Record
from sovcloud.vocab import PRECISION_BYTES, Precision

__all__ = ["MLA", "Accelerator", "Encoder", "ModelArch", "SpeechDecoder"]


class Accelerator(Entity):
    """One accelerator type (per chip or per package, as marketed)."""

    vendor: str
    name: str
    family: str = Field(description="hardware family; derating constants are fitted per family")
    origin_country: str = Field(description="ISO code of the designer's country (export-control rules)")
    tflops: dict[Precision, PositiveFloat] = Field(
        description="dense (no sparsity) tensor throughput in TFLOPS/TOPS; a missing precision is unsupported"
    )
    memory_gb: PositiveFloat
    mem_bw_tbps: PositiveFloat | None = Field(description="device memory bandwidth, TB/s; null if none")
    interconnect_gbps: NonNegativeFloat = Field(
        description="scale-up (chip-to-chip) bandwidth per chip, GB/s, one direction"
    )
    tdp_w: PositiveFloat
    idle_power_fraction: float = Field(0.3, ge=0, le=1, description="idle power as a share of TDP")
    unit_price_usd: PositiveFloat
    server_chips: PositiveInt = Field(8, description="accelerators per server")
    server_overhead_w: NonNegativeFloat = Field(
        description="host CPU, NIC, fans per server at full load, W"
    )
    server_price_usd: NonNegativeFloat = Field(description="server chassis, CPUs, NICs excluding accelerators")
    rack_servers: PositiveInt = Field(4, description="servers per rack (space accounting)")
    lifetime_years: PositiveInt = 5
    supply_cap: dict[int, NonNegativeInt] = Field(
        default_factory=dict, description="units the operator can obtain per period; missing = unlimited"
    )

    def supports(self, precision: str) -> bool:
        return precision in self.tflops


class MLA(Record):
    """Multi-head latent attention (DeepSeek-V2/V3): a compressed latent is cached per token."""

    q_lora_rank: PositiveInt
    kv_lora_rank: PositiveInt
    qk_nope_head_dim: PositiveInt
    qk_rope_head_dim: PositiveInt
    v_head_dim: PositiveInt


class Encoder(Record):
    """A modality encoder in front of an omni model's decoder."""

    modality: Literal["audio", "image", "video"]
    params: PositiveFloat
    tokens_per_unit: PositiveFloat = Field(
        description="encoder tokens per input unit: per second of audio, per image, or per video frame"
    )


class SpeechDecoder(Record):
    """Talker + codec that turns the decoder's output into streaming speech."""

    talker_total_params: PositiveFloat
    talker_active_params: PositiveFloat
    codec_hz: PositiveFloat = Field(description="codec frames generated per second of speech")
    code_groups: PositiveInt
    mtp_params: NonNegativeFloat = 0.0
    code2wav_params: NonNegativeFloat = 0.0


def _text_only_in() -> list[Literal["text", "image", "audio", "video"]]:
    return ["text"]


def _text_only_out() -> list[Literal["text", "speech"]]:
    return ["text"]


class ModelArch(Entity):
    """A served model's architecture, as in its public model card / config."""

    family: str
    license: str
    modalities_in: list[Literal["text", "image", "audio", "video"]] = Field(default_factory=_text_only_in)
    modalities_out: list[Literal["text", "speech"]] = Field(default_factory=_text_only_out)
    attention: Literal["mha", "gqa", "mla"]
    total_params: PositiveFloat
    active_params: PositiveFloat
    layers: PositiveInt
    hidden_size: PositiveInt
    q_heads: PositiveInt
    kv_heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None
    mla: MLA | None = None
    intermediate_size: PositiveInt | None = None
    experts: NonNegativeInt = Field(0, description="routed experts per MoE layer (0 = dense)")
    shared_experts: NonNegativeInt = 0
    experts_per_token: NonNegativeInt = 0
    moe_intermediate_size: PositiveInt | None = None
    dense_layers: NonNegativeInt = Field(0, description="leading dense layers in an MoE model")
    vocab_size: PositiveInt
    context_length: PositiveInt
    weight_precision: Precision = Field("bf16", description="precision of the released weights")
    encoders: list[Encoder] = Field(default_factory=list)
    speech_decoder: SpeechDecoder | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelArch:
        if self.active_params > self.total_params:
            raise ValueError("active_params exceeds total_params; active must be <= total")
        if self.attention == "mla" and self.mla is None:
            raise ValueError("attention 'mla' needs an 'mla' block (kv_lora_rank, qk_rope_head_dim, ...)")
        if self.attention in ("mha", "gqa") and (self.kv_heads is None or self.head_dim is None):
            raise ValueError(f"attention '{self.attention}' needs kv_heads and head_dim")
        if self.experts and not self.experts_per_token:
            raise ValueError("an MoE model (experts > 0) needs experts_per_token > 0")
        if self.experts_per_token > self.experts:
            raise ValueError("experts_per_token exceeds experts")
        return self

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def kv_elements_per_token(self) -> int:
        """Cached elements per token over all layers (K and V, or the MLA latent)."""
        if self.mla is not None:
            return self.layers * (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim)
        if self.kv_heads is None or self.head_dim is None:
            raise PhysicsError(f"model '{self.id}' has no kv_heads/head_dim; its KV cache cannot be sized")
        return 2 * self.layers * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, precision: str = "bf16") -> float:
        """KV-cache bytes per token at ``precision`` (bf16 reproduces the model-card figure)."""
        return self.kv_elements_per_token() * PRECISION_BYTES[precision]

    def weight_bytes(self, precision: str) -> float:
        """Bytes of all weights (all experts resident) at ``precision``."""
        return self.total_params * PRECISION_BYTES[precision]
