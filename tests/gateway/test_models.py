"""``GET /v1/models/{model}``: OpenAI's model object for a model the tenant may use, else a 404 in OpenAI's shape."""

from __future__ import annotations

import httpx
import numpy as np

from sovcloud.gateway.app import create_app
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway, run

TABLE = RouteTable(zones=("z-eu", "z-us"), models=("m1", "m2", "org/m3"),
                   backend_ids=("eu/m1/c", "us/m1/c", "eu/m2/c", "us/m3/c"), backend_site=("eu", "us", "eu", "us"),
                   model=np.array([0, 0, 1, 2]), allowed=np.array([[True, False, True, False], [True] * 4]),
                   rtt_ms=np.full((2, 4), 5.0))
TENANTS = {"sk-sov-eu": Tenant("eu", "EU", "z-eu", allowed_models=frozenset({"m1", "org/m3"})),
           "sk-sov-us": Tenant("us", "US", "z-us")}


def get(path: str, key: str | None = "sk-sov-eu") -> httpx.Response:
    async def go() -> httpx.Response:
        app = create_app(fake_gateway(TABLE, FakeUpstream(), TENANTS), health_checks=False)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            return await c.get(path, headers=headers)
    resp: httpx.Response = run(go())
    return resp


def test_retrieve_a_model_the_tenant_may_use() -> None:
    r = get("/v1/models/m1")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "m1", "object": "model", "created": 0, "owned_by": "sovcloud", "sovcloud_regions": ["eu"]}
    assert get("/v1/models/org/m3", "sk-sov-us").json()["id"] == "org/m3"  # ids with a slash (org/name)
    assert r.json() == next(m for m in get("/v1/models").json()["data"] if m["id"] == "m1")  # the list's card


def test_unknown_or_not_allowed_models_are_404_in_openais_shape() -> None:
    for path in ("/v1/models/gpt-9", "/v1/models/m2"):  # unknown; served but not allowed for the tenant
        r = get(path)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["code"] == "model_not_found" and err["type"] == "invalid_request_error" and err["param"] == "model"
        assert path.rsplit("/", 1)[1] in err["message"]
    assert get("/v1/models/m1", None).json()["error"]["code"] == "invalid_api_key"


def test_the_openapi_document_has_the_model_path() -> None:
    doc = get("/openapi.json", None).json()
    op = doc["paths"]["/v1/models/{model}"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in op["parameters"]] == [("model", "path", True)]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ModelCard"
    assert set(op["responses"]) == {"200", "401", "404"}
    assert "ModelCard" in doc["components"]["schemas"]
