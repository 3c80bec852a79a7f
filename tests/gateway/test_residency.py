"""Residency is a hard guarantee: outages, failures and retries never send data outside its allowed set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sovcloud.gateway.app import build_gateway, create_app
from sovcloud.gateway.config import load_gateway_config, plan_backends
from sovcloud.gateway.emulator import Emulator, EmulatorOptions
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.tenants import Tenant, TenantStore
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway, run, serve_app, tiny_plan

REASONS_503 = {"residency", "unhealthy", "saturated", "no_backend"}


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    Z, B, M = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 2))
    table = RouteTable(
        zones=tuple(f"z{i}" for i in range(Z)), models=tuple(f"m{i}" for i in range(M)),
        backend_ids=tuple(f"s{i}/b{i}/c" for i in range(B)), backend_site=tuple(f"s{i}" for i in range(B)),
        model=draw(hnp.arrays(np.int64, B, elements=st.integers(0, M - 1))),
        allowed=draw(hnp.arrays(bool, (Z, B))), rtt_ms=draw(hnp.arrays(float, (Z, B), elements=st.floats(0, 300))))
    behaviour = draw(st.lists(st.sampled_from(["ok", "ok", "down", "connect", "500"]), min_size=B, max_size=B))
    tenants = [Tenant(f"t{i}", "T", f"z{draw(st.integers(0, Z - 1))}",
                      allowed_models=draw(st.none() | st.frozensets(st.sampled_from(table.models))))
               for i in range(draw(st.integers(1, 3)))]
    requests = draw(st.lists(st.tuples(st.integers(0, len(tenants) - 1), st.integers(0, M - 1),
                                       st.integers(0, Z - 1), st.booleans()), min_size=1, max_size=8))
    return {"table": table, "behaviour": dict(zip(table.backend_ids, behaviour, strict=True)), "tenants": tenants,
            "requests": requests}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_property_zero_residency_violations_under_random_outages(w: dict[str, Any]) -> None:
    table: RouteTable = w["table"]
    upstream = FakeUpstream(w["behaviour"])
    keys = {f"sk-sov-{t.id}": t for t in w["tenants"]}
    gw = fake_gateway(table, upstream, keys, routing={"max_attempts": 10})

    async def go() -> None:
        await gw.health.check_all(upstream, gw.parts.targets)  # "down" backends fail their health check
        await gw.health.check_all(upstream, gw.parts.targets)
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            for ti, m, cz, stream in w["requests"]:
                tenant = w["tenants"][ti]
                origin = table.zones.index(tenant.origin_zone)
                before = len(upstream.calls)
                body = {"model": table.models[m], "messages": [{"role": "user", "content": "x"}], "stream": stream}
                r = await client.post("/v1/chat/completions", json=body, headers={
                    "Authorization": f"Bearer sk-sov-{tenant.id}", "x-sovcloud-client-zone": table.zones[cz]})
                contacted = [table.backend_ids.index(b) for b in upstream.calls[before:]]
                # the guarantee: nothing ever reaches a backend the tenant's data may not go to
                assert all(table.allowed[origin, b] and table.model[b] == m for b in contacted)
                compliant = table.allowed[origin] & (table.model == m)
                works = [b for b in np.flatnonzero(compliant) if w["behaviour"][table.backend_ids[b]] == "ok"]
                if not tenant.allows(table.models[m]) or not (table.model == m).any():
                    assert r.status_code in (403, 404) and not contacted
                elif works:
                    assert r.status_code == 200, r.text
                    b = table.backend_ids.index(r.headers["x-sovcloud-backend"])
                    assert b in works and r.headers["x-sovcloud-policy"].endswith("decision=ok")
                else:
                    assert r.status_code == 503, r.text
                    code = r.json()["error"]["code"]
                    assert code in REASONS_503 and (code == "residency") == (not compliant.any())
                    assert r.headers["x-sovcloud-policy"].endswith(f"decision={code}")
    run(go())


def test_eu_tenant_with_every_eu_backend_down_gets_503_and_no_us_backend_is_contacted(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path)
    _, backends = plan_backends(plan)
    emu = Emulator(backends, EmulatorOptions(fixed_ms=1, chunks=3, chunk_ms=1))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with TenantStore.open(ledger) as store:
        eu_key = store.add(Tenant("acme", "Acme", "z-de"))
        us_key = store.add(Tenant("yankee", "Yankee", "z-us"))
    for t in ("acme", "yankee"):
        Ledger.open(ledger).grant(t, 10**6, None)
    with serve_app(emu.app()) as emu_url:
        cfg_file = tmp_path / "gw.yaml"
        cfg_file.write_text(f"plan: {plan}\nledger: {ledger}\nupstreams: {{default_url: '{emu_url}/{{backend}}/v1'}}\n"
                            "health: {interval_s: 0.2, failures_to_down: 1}\nbreaker: {failures: 1, cooldown_s: 30}\n",
                            encoding="utf-8")
        gw, start, stop = build_gateway(load_gateway_config(cfg_file), "test")
        with serve_app(create_app(gw, start, stop)) as url, httpx.Client(base_url=url, timeout=30) as client:
            body = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "Bonjour"}], "max_tokens": 3}
            eu = {"Authorization": f"Bearer {eu_key}"}
            ok = client.post("/v1/chat/completions", json=body, headers=eu)
            assert ok.status_code == 200 and ok.headers["x-sovcloud-region"] in ("de-fra", "fr-par")
            # generation fails in the EU (health checks still pass): failover stays in the EU, then 503
            emu.set_mode("error", sites=["de-fra", "fr-par"])
            r = client.post("/v1/chat/completions", json=body, headers={**eu, "x-sovcloud-client-zone": "z-us"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "unhealthy", r.text
            assert "z-de" in r.json()["error"]["message"] and r.headers["x-sovcloud-policy"].endswith("unhealthy")
            # the whole EU down (health checks too): still 503, for streams as well
            emu.set_mode("down", sites=["de-fra", "fr-par"])
            for stream in (False, True):
                r = client.post("/v1/chat/completions", json={**body, "stream": stream}, headers=eu)
                assert r.status_code == 503 and r.json()["error"]["code"] == "unhealthy"
            stats = client.get(f"{emu_url}/_emulator/stats").json()
            assert stats["us-ash/qwen3-8b/h100-sxm"]["requests"] == 0  # never contacted for EU data
            assert stats["de-fra/qwen3-8b/h100-sxm"]["requests"] + stats["fr-par/qwen3-8b/h100-sxm"]["requests"] >= 3
            # a US tenant may use the US backend meanwhile
            r = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {us_key}"})
            assert r.status_code == 200 and r.headers["x-sovcloud-region"] == "us-ash"
            metrics = client.get("/metrics").text
            assert 'sovcloud_rejections_total{reason="unhealthy"} 3.0' in metrics
            assert 'sovcloud_backend_healthy{backend="de-fra/qwen3-8b/h100-sxm"} 0.0' in metrics
