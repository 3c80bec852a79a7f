"""Schemathesis against the gateway's own OpenAPI schema (in process, fake upstream): valid and invalid data."""

from __future__ import annotations

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from sovcloud.gateway.app import create_app
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway

TABLE = RouteTable(zones=("z-eu", "z-us"), models=("m1",), backend_ids=("eu/m1/c", "us/m1/c"),
                   backend_site=("eu", "us"), model=np.array([0, 0]), allowed=np.array([[True, False], [True, True]]),
                   rtt_ms=np.array([[5.0, 90.0], [90.0, 5.0]]))
KEY = "sk-sov-fuzz"
APP = create_app(fake_gateway(TABLE, FakeUpstream(), {KEY: Tenant("fuzz", "Fuzz", "z-eu")}), health_checks=False)

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=40)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_gateway_conforms_to_its_openapi_schema(case: schemathesis.Case) -> None:
    if case.meta is not None and case.meta.generation.mode.is_positive and isinstance(case.body, dict):
        case.body["model"] = "m1"  # a served model, so valid requests go all the way upstream (else: a 404)
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"})
