"""Derating constants of each hardware family, with their sources.

A family's constants turn datasheet peaks into achieved rates in the roofline of
:mod:`sovcloud.physics.roofline`: ``compute_eff`` and ``bw_eff`` scale the tensor rate and the
memory bandwidth, ``step_overhead_s`` is the fixed time per forward step, ``link_eff`` and
``allreduce_latency_s`` shape the tensor-parallel all-reduces, ``mem_reserve_frac`` is the device
memory kept from the KV cache, and ``moe_pair_s`` is the dispatch time per routed (token, expert)
pair. nvidia-hopper's roofline constants and the Hopper and Blackwell ``moe_pair_s`` are fitted by
:mod:`sovcloud.physics.calibrate`; every other value is sourced or stated as an assumption in its
``basis``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

__all__ = ["FAMILY_CONSTANTS", "FamilyConstants", "family_constants"]


@dataclass(frozen=True)
class FamilyConstants:
    """Derating constants of one hardware family (see ``FAMILY_CONSTANTS`` for values and sources).

    ``compute_eff``: achieved share of the effective dense tensor rate; ``bw_eff``: achieved
    share of the device-memory bandwidth; ``step_overhead_s``: fixed time per forward step;
    ``link_eff``: achieved share of the scale-up bandwidth in an all-reduce (NCCL bus
    bandwidth / nominal); ``allreduce_latency_s``: fixed time per all-reduce;
    ``mem_reserve_frac``: share of device memory kept for activations, workspace and runtime;
    ``moe_pair_s``: dispatch time per routed (token, expert) pair per MoE layer (``c_pair``).
    """

    family: str
    compute_eff: float
    bw_eff: float
    step_overhead_s: float
    link_eff: float
    allreduce_latency_s: float
    mem_reserve_frac: float
    basis: str
    moe_pair_s: float = 0.0

    def with_fit(self, compute_eff: float, bw_eff: float, step_overhead_s: float) -> FamilyConstants:
        """A copy with the three fitted roofline constants replaced."""
        return replace(self, compute_eff=compute_eff, bw_eff=bw_eff, step_overhead_s=step_overhead_s)

    def with_moe(self, moe_pair_s: float) -> FamilyConstants:
        """A copy with the fitted MoE dispatch cost per routed pair replaced."""
        return replace(self, moe_pair_s=moe_pair_s)


_HOPPER_BASIS = (
    "compute_eff, bw_eff, step_overhead_s fitted by sovcloud.perf_calibrate.calibrate() on "
    "data/validation/perf_calibration.csv (H100/H200 fp8 rows admitted by its consistency screen: 5 of 8); "
    "link_eff 0.8: nccl-tests all-reduce bus bandwidth ~360 of 450 GB/s on NVLink-4; "
    "allreduce_latency 8 us: NCCL/TensorRT-LLM custom all-reduce small-message latency (5-10 us); "
    "mem_reserve_frac 0.10: TensorRT-LLM kv_cache_free_gpu_mem_fraction 0.9 / vLLM gpu_memory_utilization 0.9; "
    "moe_pair_s 16.6 ns fitted by sovcloud.perf_calibrate.calibrate_moe() on the H200 rows of "
    "data/validation/perf_moe_calibration.csv (Qwen3-235B-A22B, TensorRT-LLM perf overview)"
)

# Fitted values (calibrate() reproduces them; tests/physics/test_calibrate.py pins that).
_HOPPER = FamilyConstants(
    family="nvidia-hopper",
    compute_eff=0.64,
    bw_eff=0.90,
    step_overhead_s=0.006,
    link_eff=0.8,
    allreduce_latency_s=8e-6,
    mem_reserve_frac=0.10,
    basis=_HOPPER_BASIS,
    moe_pair_s=16.6e-9,
)


def _like_hopper(family: str, note: str, **changes: float) -> FamilyConstants:
    values = {
        "compute_eff": _HOPPER.compute_eff,
        "bw_eff": _HOPPER.bw_eff,
        "step_overhead_s": _HOPPER.step_overhead_s,
        "link_eff": _HOPPER.link_eff,
        "allreduce_latency_s": _HOPPER.allreduce_latency_s,
        "mem_reserve_frac": _HOPPER.mem_reserve_frac,
        "moe_pair_s": _HOPPER.moe_pair_s,
    }
    values.update(changes)
    return FamilyConstants(family=family, basis=note, **values)


#: Derating constants per hardware family. nvidia-hopper is fitted (the calibration data is
#: H100/H200); nvidia-blackwell has only its MoE dispatch cost fitted (B200 rows of the MoE
#: calibration file); the rest are ASSUMPTIONS derived from hopper as stated in ``basis``.
FAMILY_CONSTANTS: Mapping[str, FamilyConstants] = MappingProxyType({
    "nvidia-hopper": _HOPPER,
    "nvidia-blackwell": _like_hopper(
        "nvidia-blackwell",
        "ASSUMED equal to nvidia-hopper (same TensorRT-LLM stack; no Blackwell row in the calibration CSV); "
        "fp4 gains are limited by LOW_PRECISION_SHARE; moe_pair_s 15.3 ns fitted by calibrate_moe() on the "
        "B200 rows of data/validation/perf_moe_calibration.csv (Qwen3-30B-A3B, TensorRT-LLM perf overview)",
        moe_pair_s=15.3e-9,
    ),
    "nvidia-ampere": _like_hopper(
        "nvidia-ampere", "ASSUMED equal to nvidia-hopper (same software stack; no calibration data)"
    ),
    "nvidia-ada": _like_hopper(
        "nvidia-ada",
        "ASSUMED equal to nvidia-hopper for compute/memory; PCIe all-reduce: latency 25 us and 0.7 of "
        "the PCIe 4.0 x16 bandwidth (no NVLink)",
        link_eff=0.7,
        allreduce_latency_s=25e-6,
    ),
    "amd-cdna3": _like_hopper(
        "amd-cdna3",
        "ASSUMED from nvidia-hopper scaled by microbenchmarks: compute_eff x0.6 (MI300X reaches ~45-50% of "
        "its BF16/FP8 GEMM peak vs ~70-75% for H100: SemiAnalysis 'MI300X vs H100 vs H200 Benchmark Part 1', "
        "Dec 2024); bw_eff 0.81 (~81% of 5.3 TB/s, same source); RCCL link_eff 0.6",
        compute_eff=_HOPPER.compute_eff * 0.6,
        bw_eff=0.81,
        link_eff=0.6,
    ),
    "huawei-ascend": _like_hopper(
        "huawei-ascend",
        "ASSUMED equal to nvidia-hopper (nearest family with data; MindIE/vLLM-Ascend unmeasured)",
    ),
    "thead-ppu": _like_hopper("thead-ppu", "ASSUMED equal to nvidia-hopper (no public measurements)"),
    "thead-npu": _like_hopper("thead-npu", "ASSUMED equal to nvidia-hopper (cannot host LLMs: no DRAM)"),
})


def family_constants(family: str) -> FamilyConstants:
    """The constants of ``family``; an unknown family falls back to nvidia-hopper's values."""
    known = FAMILY_CONSTANTS.get(family)
    if known is not None:
        return known
    return _like_hopper(family, f"unknown family '{family}': nvidia-hopper constants assumed")
