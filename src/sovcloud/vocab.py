"""The small typed vocabulary shared by every sovcloud module.

Named dimensions of the compiled world, the literal enums that appear in scenario files,
and a few type aliases. Nothing here computes anything.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "DEFAULT_SCENARIO",
    "DIMS",
    "PLAN_SCHEMA",
    "PRECISION_BYTES",
    "SIM_SCHEMA",
    "SLO_SCENARIOS",
    "ExportStatus",
    "OptionKind",
    "Period",
    "Precision",
    "SiteKind",
    "SiteStatus",
    "WorkloadKind",
    "ZoneKind",
]

#: The format tag of a plan file (``plan.json``): written by the planner, checked by every reader.
PLAN_SCHEMA = "sovcloud.plan/1"
#: The format tag of a simulation summary (``summary.json``): written by the simulator, checked by the report.
SIM_SCHEMA = "sovcloud.sim/1"

#: The bundled scenario every command uses when none is given.
DEFAULT_SCENARIO = "global-2025"

#: Named SLO scenarios of published results: name -> (TTFT SLO s, TPOT SLO s); None = no limit.
#: ``server``/``interactive`` are MLPerf Inference's Llama-2-70B latency limits (p99).
SLO_SCENARIOS: dict[str, tuple[float | None, float | None]] = {
    "offline": (None, None),
    "max-throughput": (None, None),
    "server": (2.0, 0.2),
    "interactive": (0.45, 0.04),
}

#: The named dimensions every compiled array is indexed by.
DIMS: tuple[str, ...] = ("zone", "site", "chip", "model", "workload", "period", "hour")

Precision: TypeAlias = Literal["fp4", "fp8", "int8", "fp16", "bf16"]
#: Bytes per element of each precision (weights and KV cache).
PRECISION_BYTES: dict[str, float] = {"fp4": 0.5, "fp8": 1.0, "int8": 1.0, "fp16": 2.0, "bf16": 2.0}

WorkloadKind: TypeAlias = Literal["interactive", "realtime", "batch"]
SiteKind: TypeAlias = Literal["existing", "candidate"]
SiteStatus: TypeAlias = Literal[
    "active", "active_local_region", "active_partner_operated", "shutting_down", "announced", "candidate"
]
OptionKind: TypeAlias = Literal["build", "lease", "expand"]
ZoneKind: TypeAlias = Literal["country", "metro"]
#: Export-control outcome for one (chip, operator HQ, site country, date).
ExportStatus: TypeAlias = Literal["allowed", "licensed", "banned"]
#: A planning period is a calendar year.
Period: TypeAlias = int
