"""What a gateway runs on: the route table and live load, the upstreams, the tenant store and the ledger.

:class:`GatewayParts` bundles them; :func:`sovcloud.gateway.app.build_gateway` makes them from a config and
the tests pass fakes. :class:`TenantLookup` and :class:`Metering` are the interfaces the gateway needs of the
tenant store (:class:`~sovcloud.metering.tenants.TenantStore`) and of the ledger
(:class:`~sovcloud.metering.ledger.Ledger` or :class:`~sovcloud.metering.lease.LeasedLedger`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from sovcloud.gateway.config import UpstreamTarget
from sovcloud.gateway.upstream import UpstreamClient
from sovcloud.metering.book import Reservation
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import LoadState, RouteTable

__all__ = ["GatewayParts", "Metering", "TenantLookup"]


class TenantLookup(Protocol):
    def authenticate(self, api_key: str) -> Tenant | None: ...

    def get(self, tenant_id: str) -> Tenant: ...


class Metering(Protocol):
    # True when a progress mark costs a database commit: the first block is then marked right after the
    # reservation, while the upstream prefills, so the first token does not wait for it
    premark: bool

    async def reserve(self, tenant: Tenant, request_id: str, model: str, prompt_tokens: int,
                      max_tokens: int) -> Reservation: ...

    async def progress(self, reservation: Reservation, completion_tokens: int) -> None: ...

    async def settle(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int) -> Any: ...

    async def release(self, reservation: Reservation) -> None: ...


@dataclass
class GatewayParts:
    """Everything a gateway runs on; :func:`sovcloud.gateway.app.build_gateway` makes them from a config."""

    table: RouteTable
    state: LoadState
    targets: tuple[UpstreamTarget, ...]
    upstream: UpstreamClient
    tenants: TenantLookup
    ledger: Metering
    residency_rule: tuple[str, ...]  # per zone of the table
    tpot_s: NDArray[np.float64]  # per backend: to turn a non-streamed latency into a TTFT estimate
