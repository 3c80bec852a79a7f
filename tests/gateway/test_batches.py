"""The OpenAI Batch API: the official SDK against a real gateway, and the runner's deadline, cancel and resume."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import orjson
import pytest

from sovcloud.errors import ApiError
from sovcloud.gateway.app import build_gateway, create_app
from sovcloud.gateway.batch_api import BatchApi
from sovcloud.gateway.batches import check_lines
from sovcloud.gateway.config import load_gateway_config, plan_backends
from sovcloud.gateway.emulator import Emulator, EmulatorOptions
from sovcloud.gateway.handler import Gateway
from sovcloud.gateway.upstream import UpstreamTarget
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.tenants import Tenant, TenantStore
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway, run, serve_app, tiny_plan


def _lines(n: int, url: str = "/v1/chat/completions", **extra: Any) -> bytes:
    rows = [{"custom_id": f"req-{i}", "method": "POST", "url": url,
             "body": {"model": "qwen3-8b", "messages": [{"role": "user", "content": f"line {i}"}], "max_tokens": 3,
                      **extra}} for i in range(n)]
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, str]]:
    tmp = tmp_path_factory.mktemp("batches")
    plan = tiny_plan(tmp)
    _, backends = plan_backends(plan)
    emu = Emulator(backends, EmulatorOptions(fixed_ms=2, chunks=3, chunk_ms=1))
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    with TenantStore.open(ledger) as store:
        key = store.add(Tenant("batcher", "Batch user", "z-fr"))
        other = store.add(Tenant("other", "Someone else", "z-fr"))
    Ledger.open(ledger).grant("batcher", 10**6, None)
    with serve_app(emu.app()) as emu_url:
        cfg = tmp / "gw.yaml"
        cfg.write_text(f"plan: {plan}\nledger: {ledger}\nbatch: {{folder: files, concurrency: 4}}\n"
                       f"upstreams: {{default_url: '{emu_url}/{{backend}}/v1'}}\n", encoding="utf-8")
        gw, start, stop = build_gateway(load_gateway_config(cfg), "batches")
        with serve_app(create_app(gw, start, stop)) as url:
            yield url + "/v1", key, other, ledger


def _wait(client: openai.OpenAI, batch_id: str, timeout_s: float = 60.0) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        b = client.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not finish")


def test_sdk_uploads_runs_and_downloads_a_batch_and_every_line_is_metered(gateway: tuple[str, str, str, str]) -> None:
    url, key, other, ledger = gateway
    before = Ledger.open(ledger).balance("batcher").spent_tokens
    with openai.OpenAI(base_url=url, api_key=key, max_retries=0) as client:
        f = client.files.create(file=("in.jsonl", io.BytesIO(_lines(12))), purpose="batch")
        assert f.purpose == "batch" and f.bytes > 0 and client.files.retrieve(f.id).id == f.id
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"job": "nightly"})
        assert b.status == "in_progress" and b.request_counts is not None and b.request_counts.total == 12
        done = _wait(client, b.id)
        assert done.status == "completed" and done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (12, 0)
        assert done.output_file_id and done.error_file_id is None and done.metadata == {"job": "nightly"}
        rows = [orjson.loads(x) for x in client.files.content(done.output_file_id).content.splitlines()]
        assert sorted(r["custom_id"] for r in rows) == sorted(f"req-{i}" for i in range(12))
        assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in rows)
        used = sum(r["response"]["body"]["usage"]["total_tokens"] for r in rows)
        assert any(x.id == b.id for x in client.batches.list().data)
    spent = Ledger.open(ledger).balance("batcher").spent_tokens - before
    assert spent == used  # each line was reserved and settled like any request
    with openai.OpenAI(base_url=url, api_key=other, max_retries=0) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.batches.retrieve(b.id)
        with pytest.raises(openai.NotFoundError):
            stranger.files.retrieve(f.id)


def test_a_bad_input_file_fails_the_batch_naming_its_lines(gateway: tuple[str, str, str, str]) -> None:
    url, key, _, _ = gateway
    bad = _lines(2) + b'{"custom_id": "req-0", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n' \
        + b"not json\n" + _lines(1, url="/v1/embeddings").replace(b"req-0", b"req-9")
    with openai.OpenAI(base_url=url, api_key=key, max_retries=0) as client:
        f = client.files.create(file=("bad.jsonl", io.BytesIO(bad)), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert b.status == "failed" and b.errors is not None and b.errors.data is not None
        lines = {e.line: e.message for e in b.errors.data}
        assert set(lines) == {3, 4, 5}
        assert "unique" in (lines[3] or "") and "endpoint" in (lines[5] or "")
        with pytest.raises(openai.BadRequestError):
            client.batches.create(input_file_id=f.id, endpoint="/v1/audio/speech", completion_window="24h")


def test_check_lines_refuses_streaming_and_counts() -> None:
    lines, errors = check_lines(_lines(3, stream=True), "/v1/chat/completions", 10)
    assert not lines and all("stream" in e["message"] for e in errors)
    lines, errors = check_lines(_lines(3), "/v1/chat/completions", 2)
    assert len(lines) == 3 and errors[0]["code"] == "too_many_requests"


# ---------------------------------------------------------------- the runner: deadline, cancel, resume
KEY = "sk-sov-b"
TENANT = Tenant("b", "B", "z0")


class Held(FakeUpstream):
    """Answers its first ``allow`` requests at once, the others only once ``go`` is set."""

    def __init__(self, allow: int = 0) -> None:
        super().__init__()
        self.go, self.allow, self.seen = asyncio.Event(), allow, 0

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> Any:
        self.seen += 1
        if self.seen > self.allow:
            await self.go.wait()
        return await super().post(target, path, body, stream, content_type)


def _gw(upstream: FakeUpstream, folder: Path) -> Gateway:
    table = RouteTable(zones=("z0",), models=("qwen3-8b",), backend_ids=("s0/m/c",), backend_site=("s0",),
                       model=np.zeros(1, np.int64), allowed=np.ones((1, 1), bool), rtt_ms=np.zeros((1, 1)))
    return fake_gateway(table, upstream, {KEY: TENANT}, batch={"folder": str(folder), "concurrency": 2})


async def _post(app: Any, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        return await c.post(path, headers={"authorization": f"Bearer {KEY}"}, **kw)


def _api(gw: Gateway) -> BatchApi:
    app = create_app(gw, health_checks=False)
    return BatchApi(gw, app._hot)


def test_lines_not_run_by_the_deadline_expire(tmp_path: Path) -> None:
    up = Held()
    api = _api(_gw(up, tmp_path))
    start = time.time()
    api.runner.clock = lambda: start

    async def go() -> dict[str, Any]:
        f = api.files.put(TENANT.id, _lines(5), "in.jsonl", "batch")
        b = api.runner.create(TENANT, f.id, "/v1/chat/completions", "24h", None)
        await asyncio.sleep(0.05)  # two lines in flight, held by the upstream
        api.runner.clock = lambda: start + 25 * 3600  # past the 24 h window
        up.go.set()
        await api.runner.wait(b["id"])
        return api.runner.get(TENANT.id, b["id"])

    b = run(go())
    assert b["status"] == "expired" and b["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    errors = [orjson.loads(x) for x in api.files.content(TENANT.id, b["error_file_id"]).splitlines()]
    assert all(e["error"]["code"] == "batch_expired" and e["response"] is None for e in errors)


def test_a_cancelled_batch_runs_no_new_line(tmp_path: Path) -> None:
    up = Held()
    api = _api(_gw(up, tmp_path))

    async def go() -> dict[str, Any]:
        f = api.files.put(TENANT.id, _lines(6), "in.jsonl", "batch")
        b = api.runner.create(TENANT, f.id, "/v1/chat/completions", "24h", None)
        await asyncio.sleep(0.05)
        assert api.runner.cancel(TENANT, b["id"])["status"] == "cancelling"
        up.go.set()
        await api.runner.wait(b["id"])
        return api.runner.get(TENANT.id, b["id"])

    b = run(go())
    assert b["status"] == "cancelled" and b["request_counts"]["completed"] == 2 and len(up.calls) == 2


def test_a_stopped_gateway_resumes_its_batches_without_running_a_line_twice(tmp_path: Path) -> None:
    first = Held(allow=3)  # three lines answered, the next ones held ...
    api = _api(_gw(first, tmp_path))

    async def part_one() -> str:
        f = api.files.put(TENANT.id, _lines(6), "in.jsonl", "batch")
        b = api.runner.create(TENANT, f.id, "/v1/chat/completions", "24h", None)
        while len(first.calls) < 3 or first.seen < 5:
            await asyncio.sleep(0.001)
        await api.runner.close()  # ... when the gateway stops
        return str(b["id"])

    batch_id = run(part_one())
    assert api.runner.get(TENANT.id, batch_id)["status"] == "in_progress"
    second = FakeUpstream()
    again = _api(_gw(second, tmp_path))

    async def part_two() -> dict[str, Any]:
        assert await again.runner.resume() == 1
        await again.runner.wait(batch_id)
        return again.runner.get(TENANT.id, batch_id)

    b = run(part_two())
    assert b["status"] == "completed" and b["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    rows = [orjson.loads(x) for x in again.files.content(TENANT.id, b["output_file_id"]).splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"req-{i}" for i in range(6)]  # each line once
    assert len(first.calls) == 3 and len(second.calls) == 3  # the finished lines were not sent again


def test_a_line_that_can_never_run_fails_at_once_and_is_not_retried(tmp_path: Path) -> None:
    up = FakeUpstream()
    api = _api(_gw(up, tmp_path))
    bad = _lines(2).replace(b'"qwen3-8b"', b'"no-such-model"', 1)

    async def go() -> dict[str, Any]:
        f = api.files.put(TENANT.id, bad, "in.jsonl", "batch")
        b = api.runner.create(TENANT, f.id, "/v1/chat/completions", "24h", None)
        await asyncio.wait_for(api.runner.wait(b["id"]), timeout=5.0)  # no retry loop
        return api.runner.get(TENANT.id, b["id"])

    b = run(go())
    assert b["status"] == "completed" and b["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    err = orjson.loads(api.files.content(TENANT.id, b["error_file_id"]))
    assert err["response"]["status_code"] == 404 and err["response"]["body"]["error"]["code"] == "model_not_found"


def test_every_tenant_has_its_own_folder_inside_the_store(tmp_path: Path) -> None:
    from sovcloud.gateway.files import FileStore, tenant_dir

    names = ["a b", "a_b", "..", ".", "x/../../y", "é"]
    dirs = {tenant_dir(n) for n in names}
    assert len(dirs) == len(names) and all("/" not in d and not d.startswith(".") for d in dirs)
    store = FileStore(tmp_path, 1024)
    f = store.put("a b", b"{}\n", "x.jsonl", "batch")
    with pytest.raises(ApiError):
        store.get("a_b", f.id)
    assert store.get("a b", f.id).id == f.id
