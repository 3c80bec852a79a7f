"""Emulated OpenAI-compatible backends of a plan, for demos, tests and benchmarks (one process, one port).

Every backend ``site/model/chip`` of the plan is served under ``http://HOST:PORT/<backend id>/v1``
(``/chat/completions``, ``/completions``, ``/embeddings``, ``/models``). Two timing modes:

* **physics** (default), like llm-d-inference-sim does for vLLM but with the plan's own serving model
  (:class:`sovcloud.routing.backends.Backends`): at most ``slots = replicas x max_batch`` sequences run at
  once (FCFS queue beyond); a request joins the least-busy replica, waits ``prompt / prefill_tokens_per_s``
  (its prefill), then emits its tokens at ``tpot(b) = tpot0 + tpot1 * b`` for the replica's current batch
  ``b``, so TTFT and TPOT grow with load. ``time_scale`` multiplies every duration (0.01: 100x faster).
* **fixed** (``fixed_ms``): a non-streamed answer after ``fixed_ms``; a stream of ``chunks`` one-token
  events ``chunk_ms`` apart; no queueing. This is the mock of the gateway overhead benchmark.

Completions are ``min(max_tokens, output_tokens)`` tokens (default: the backend's typical output length),
the usage is reported (prompt tokens counted as ceil(UTF-8 bytes / 4)), and ``stream_options.include_usage``
is honoured. ``GET /_emulator/stats`` gives per-backend request counts; ``POST /_emulator/fail`` with
``{"backends"|"sites": [...], "mode": "down"|"error"|"up"}`` takes backends down (503 everywhere, health
checks included) or makes generation fail (500) for failover tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sovcloud.errors import ConfigError, UsageError
from sovcloud.routing.backends import Backends
from sovcloud.scenario.loader import load_scenario
from sovcloud.vocab import PLAN_SCHEMA

__all__ = ["EmulatedBackend", "Emulator", "EmulatorOptions", "write_fixed_plan"]

_WORDS = (" the", " plan", " serves", " tokens", " within", " its", " region", ".")


async def _until(loop: asyncio.AbstractEventLoop, due: float) -> None:
    """Sleep until ``loop.time() >= due``; only a pass through the loop when that time has come."""
    await asyncio.sleep(max(0.0, due - loop.time()))


@dataclass(frozen=True)
class EmulatorOptions:
    time_scale: float = 1.0
    fixed_ms: float | None = None  # fixed-latency mode when set
    chunks: int = 20
    chunk_ms: float = 5.0
    output_tokens: int | None = None  # default: each backend's typical output length


@dataclass
class EmulatedBackend:
    id: str
    site: str
    model: str
    replicas: int
    max_batch: int
    prefill_tps: float
    tpot0: float
    tpot1: float
    typical_output: int
    active: list[int] = field(default_factory=list)
    slots: asyncio.Semaphore | None = None
    requests: int = 0
    queued: int = 0
    mode: str = "up"

    def tpot(self, batch: int) -> float:
        return self.tpot0 + self.tpot1 * min(max(batch, 1), self.max_batch)


def _text_tokens(s: str) -> int:
    return -(-len(s.encode("utf-8", "surrogatepass")) // 4)


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        n = 0
        for m in body.get("messages") or ():
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                n += _text_tokens(c) + 3
            elif isinstance(c, list):
                n += sum(_text_tokens(p.get("text") or "") if isinstance(p, dict) else 0 for p in c) + 3
        return max(n, 1)
    value = body.get("prompt", body.get("input", ""))
    if isinstance(value, str):
        return max(_text_tokens(value), 1)
    if isinstance(value, list):
        return max(sum(len(x) if isinstance(x, list) else 1 if isinstance(x, int) else _text_tokens(str(x))
                       for x in value), 1)
    return 1


class Emulator:
    """The emulated backends of one plan period and the Starlette app serving them."""

    def __init__(self, backends: Backends, options: EmulatorOptions = EmulatorOptions()) -> None:
        self.options = options
        self.backends: dict[str, EmulatedBackend] = {}
        for b, bid in enumerate(backends.ids):
            self.backends[bid] = EmulatedBackend(
                id=bid, site=backends.sites[int(backends.site[b])], model=backends.models[int(backends.model[b])],
                replicas=int(backends.replicas[b]), max_batch=int(backends.max_batch[b]),
                prefill_tps=float(backends.prefill_tokens_per_s[b]), tpot0=float(backends.tpot0_s[b]),
                tpot1=float(backends.tpot1_s[b]), typical_output=max(1, round(float(backends.output_tokens[b]))))
        self._created = int(time.time())

    # ---- timing ------------------------------------------------------------------------------------
    def _n_out(self, be: EmulatedBackend, body: dict[str, Any]) -> int:
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        want = self.options.output_tokens or (self.options.chunks if self.options.fixed_ms is not None
                                              else be.typical_output)
        return max(1, min(int(cap), want)) if isinstance(cap, int) else want

    async def _tokens(self, be: EmulatedBackend, prompt: int, n_out: int) -> Any:
        """Yield once per generated token, at the physics (or fixed) pace.

        Token ``k`` is due at ``start + sum of the first k steps`` (a deadline), not one step after the
        previous token was sent: a step's timer firing late (the emulator's own CPU is busy) does not delay
        every later token, as it would not on a real server, whose pace is its accelerator's. Tokens that
        fell behind are emitted at once, back to back."""
        o = self.options
        loop = asyncio.get_running_loop()
        if o.fixed_ms is not None:
            due = loop.time()
            for _ in range(n_out):
                due += o.chunk_ms / 1000.0
                await _until(loop, due)
                yield
            return
        if be.slots is None:
            be.slots = asyncio.Semaphore(max(1, be.replicas * be.max_batch))
            be.active = [0] * max(1, be.replicas)
        be.queued += 1
        async with be.slots:
            be.queued -= 1
            r = min(range(len(be.active)), key=be.active.__getitem__)
            be.active[r] += 1
            try:
                due = loop.time() + prompt / max(be.prefill_tps, 1.0) * o.time_scale
                await _until(loop, due)
                for _ in range(n_out):
                    due += be.tpot(be.active[r]) * o.time_scale
                    await _until(loop, due)
                    yield
            finally:
                be.active[r] -= 1

    # ---- endpoints ---------------------------------------------------------------------------------
    def _backend(self, request: Request) -> EmulatedBackend | Response:
        be = self.backends.get(request.path_params["backend"])
        if be is None:
            return _error(404, f"no emulated backend '{request.path_params['backend']}'", "not_found")
        if be.mode == "down":
            return _error(503, f"backend {be.id} is down (emulated outage)", "unavailable")
        return be

    async def generate(self, request: Request) -> Response:
        be = self._backend(request)
        if isinstance(be, Response):
            if request.path_params["backend"] in self.backends:
                self.backends[request.path_params["backend"]].requests += 1
            return be
        be.requests += 1
        if be.mode == "error":
            return _error(500, f"backend {be.id} failed (emulated error)", "internal_error")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "body is not JSON", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object", "invalid_json")
        kind = request.url.path.rsplit("/", 1)[-1]
        prompt = _prompt_tokens(body)
        if kind == "embeddings":
            return self._embeddings(be, body, prompt)
        chat = kind == "completions" and request.url.path.endswith("chat/completions")
        n_out = self._n_out(be, body)
        rid = f"emu-{time.perf_counter_ns():x}"
        if body.get("stream"):
            opts = body.get("stream_options")
            usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            return StreamingResponse(self._stream(be, rid, body, chat, prompt, n_out, usage),
                                     media_type="text/event-stream")
        if self.options.fixed_ms is not None:
            await asyncio.sleep(self.options.fixed_ms / 1000.0)
            n = n_out
        else:
            n = 0
            async for _ in self._tokens(be, prompt, n_out):
                n += 1
        text = "".join(_WORDS[i % len(_WORDS)] for i in range(n))
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text},
                                   "finish_reason": "length"} if chat else
                                  {"index": 0, "text": text, "finish_reason": "length"})
        out = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": self._created,
               "model": body.get("model", be.model), "choices": [choice],
               "usage": {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}}
        return Response(orjson.dumps(out), media_type="application/json")

    async def _stream(self, be: EmulatedBackend, rid: str, body: dict[str, Any], chat: bool, prompt: int,
                      n_out: int, usage: bool) -> AsyncGenerator[bytes, None]:
        """One event per token as it is generated; then the finish event, the usage (if asked for) and
        ``[DONE]``, which are ready at once, in one block."""
        head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": self._created, "model": body.get("model", be.model)}
        i = 0
        async for _ in self._tokens(be, prompt, n_out):
            word = _WORDS[i % len(_WORDS)]
            delta: dict[str, str] = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            choice = {"index": 0, "delta": delta, "finish_reason": None} if chat else \
                {"index": 0, "text": word, "finish_reason": None}
            i += 1
            yield b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"
        last = {"index": 0, "delta": {}, "finish_reason": "length"} if chat else \
            {"index": 0, "text": "", "finish_reason": "length"}
        tail = [b"data: " + orjson.dumps({**head, "choices": [last]}) + b"\n\n"]
        if usage:
            u = {"prompt_tokens": prompt, "completion_tokens": i, "total_tokens": prompt + i}
            tail.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": u}) + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        yield b"".join(tail)

    def _embeddings(self, be: EmulatedBackend, body: dict[str, Any], prompt: int) -> Response:
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        data = [{"object": "embedding", "index": i, "embedding": [round(0.1 * ((i + k) % 7), 3) for k in range(8)]}
                for i in range(count)]
        out = {"object": "list", "data": data, "model": body.get("model", be.model),
               "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
        return Response(orjson.dumps(out), media_type="application/json")

    async def models(self, request: Request) -> Response:
        be = self._backend(request)
        if isinstance(be, Response):
            return be
        data = [{"id": be.model, "object": "model", "created": self._created, "owned_by": "sovcloud-emulator"}]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def stats(self, request: Request) -> Response:
        out = {b.id: {"site": b.site, "requests": b.requests, "active": sum(b.active), "queued": b.queued,
                      "mode": b.mode} for b in self.backends.values()}
        return Response(orjson.dumps(out), media_type="application/json")

    def set_mode(self, mode: str, backends: list[str] | None = None, sites: list[str] | None = None) -> list[str]:
        """Put backends (by id or by site) in ``mode`` (up, down, error); returns the ids changed."""
        if mode not in ("up", "down", "error"):
            raise ConfigError(f"mode {mode!r}: use up, down or error")
        hit = [b for b in self.backends.values() if (backends and b.id in backends) or (sites and b.site in sites)]
        for b in hit:
            b.mode = mode
        return [b.id for b in hit]

    async def fail(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            changed = self.set_mode(str(body.get("mode", "down")), body.get("backends"), body.get("sites"))
        except (orjson.JSONDecodeError, AttributeError, ConfigError) as exc:
            return _error(400, f"expected {{'backends'|'sites': [...], 'mode': 'down'|'error'|'up'}}: {exc}",
                          "invalid_request")
        return Response(orjson.dumps({"changed": changed}), media_type="application/json")

    async def audio(self, request: Request) -> Response:
        """``/audio/speech`` (a silent 16-bit 24 kHz WAV, 1 s per 15 characters) and ``/audio/transcriptions`` (a
        fixed transcript with token usage: one input token per 100 bytes of audio, one output token per word)."""
        be = self._backend(request)
        if isinstance(be, Response):
            return be
        be.requests += 1
        if be.mode == "error":
            return _error(500, f"backend {be.id} failed (emulated error)", "internal_error")
        if request.url.path.endswith("/audio/speech"):
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return _error(400, "body is not JSON", "invalid_json")
            frames = 24_000 * max(1, len(str(body.get("input", ""))) // 15)
            data = frames * 2
            header = (b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
                      + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (24_000).to_bytes(4, "little")
                      + (48_000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
                      + b"data" + data.to_bytes(4, "little"))
            return Response(header + bytes(data), media_type="audio/wav")
        async with request.form() as form:
            upload = form.get("file")
            size = len(await upload.read()) if not isinstance(upload, str) and upload is not None else 0
        text = "emulated transcript of the audio"
        usage = {"type": "tokens", "input_tokens": max(1, size // 100), "output_tokens": len(text.split()),
                 "total_tokens": max(1, size // 100) + len(text.split())}
        return Response(orjson.dumps({"text": text, "usage": usage}), media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/_emulator/stats", self.stats, methods=["GET"]),
            Route("/_emulator/fail", self.fail, methods=["POST"]),
            Route("/{backend:path}/v1/chat/completions", self.generate, methods=["POST"]),
            Route("/{backend:path}/v1/completions", self.generate, methods=["POST"]),
            Route("/{backend:path}/v1/embeddings", self.generate, methods=["POST"]),
            Route("/{backend:path}/v1/audio/speech", self.audio, methods=["POST"]),
            Route("/{backend:path}/v1/audio/transcriptions", self.audio, methods=["POST"]),
            Route("/{backend:path}/v1/models", self.models, methods=["GET"]),
        ])


def _error(status: int, message: str, code: str) -> Response:
    body = {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                      "param": None, "code": code}}
    return Response(orjson.dumps(body), status, media_type="application/json")


def write_fixed_plan(path: Path, scenario: str, deployments: Sequence[tuple[str, str, str, float, int]],
                     period: int | None = None) -> Path:
    """Write a ``plan.json`` with hand-chosen deployments ``(site, chip, model, chips, tp)`` and no solve.

    For demos, tests and benchmarks that need known backends (e.g. one per site) rather than an optimal
    buildout; the gateway and the emulator read it like any plan.
    """
    sc = load_scenario(scenario)
    per = period if period is not None else sc.horizon.periods[-1]
    known = {s.id for s in sc.sites}
    for site, *_ in deployments:
        if site not in known:
            raise UsageError(f"site '{site}' is not in scenario '{sc.name}'; use one of {', '.join(sorted(known))}")
    doc = {
        "schema": PLAN_SCHEMA,
        "scenario": {"name": sc.name, "source": str(Path(scenario).resolve()) if Path(scenario).is_file() else scenario,
                     "sha256": "", "shocks": []},
        "periods": [per],
        "sites": [{"site": s.id, "name": s.name, "city": s.city, "country": s.country, "lat": s.lat, "lon": s.lon,
                   "kind": str(s.kind), "status": str(s.status)} for s in sc.sites],
        "decisions": {"deployments": [{"site": site, "chip": chip, "model": model, "period": per, "chips": chips,
                                       "tp": tp} for site, chip, model, chips, tp in deployments]},
    }
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path
