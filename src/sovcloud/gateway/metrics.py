"""Observability of the gateway: Prometheus metrics (one registry per gateway) and JSON request logs.

Metrics (``GET /metrics``)::

    sovcloud_requests_total{endpoint, status}            every answered request
    sovcloud_request_seconds{endpoint, stream}           whole request, as the client sees it
    sovcloud_ttft_seconds{region}                        to the first streamed token
    sovcloud_gateway_overhead_seconds                    admission: auth, checks, routing, reservation
    sovcloud_routed_total{region, backend}               where requests ran
    sovcloud_rejections_total{reason}                    refusals by machine-readable reason
    sovcloud_tokens_total{model, kind}                   metered (settled) prompt / completion tokens
    sovcloud_upstream_failures_total{backend, kind}      connection / status / stream failures
    sovcloud_backend_inflight{backend}, sovcloud_backend_healthy{backend}, sovcloud_backend_ttft_seconds
                                                         the router's live state, read at scrape time
Label children are cached, so the hot path is a dict look-up and an add per metric.

Logs are JSON lines on stderr: events through the ``sovcloud`` loggers (:class:`JsonFormatter`), and one
line per request through :class:`AccessLog`, which appends to a buffer written out every ``interval_s``
(default 0.2 s) or when it reaches 64 KiB, so a request costs no write system call.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sovcloud.routing.router import LoadState

__all__ = ["CONTENT_TYPE", "AccessLog", "GatewayMetrics", "JsonFormatter", "configure_json_logging"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LAT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_OVERHEAD = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class _StateCollector(Collector):
    def __init__(self, ids: tuple[str, ...], state: LoadState) -> None:
        self._ids, self._state = ids, state

    def collect(self) -> Iterator[Metric]:
        inflight = GaugeMetricFamily("sovcloud_backend_inflight", "requests in flight per backend", labels=["backend"])
        healthy = GaugeMetricFamily("sovcloud_backend_healthy", "1 if the router may use the backend",
                                    labels=["backend"])
        ttft = GaugeMetricFamily("sovcloud_backend_ttft_seconds", "recent TTFT estimate (EWMA)", labels=["backend"])
        for b, bid in enumerate(self._ids):
            inflight.add_metric([bid], float(self._state.inflight[b]))
            healthy.add_metric([bid], float(self._state.healthy[b]))
            ttft.add_metric([bid], float(self._state.ttft_s[b]))
        yield from (inflight, healthy, ttft)


class GatewayMetrics:
    """The gateway's metrics in their own registry (several gateways may live in one process in tests)."""

    def __init__(self, backend_ids: tuple[str, ...] = (), state: LoadState | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter("sovcloud_requests", "answered requests", ["endpoint", "status"], registry=r)
        self._latency = Histogram("sovcloud_request_seconds", "request latency", ["endpoint", "stream"],
                                  buckets=_LAT, registry=r)
        self._ttft = Histogram("sovcloud_ttft_seconds", "time to first streamed token", ["region"],
                               buckets=_LAT, registry=r)
        self._overhead = Histogram("sovcloud_gateway_overhead_seconds", "admission time inside the gateway",
                                   buckets=_OVERHEAD, registry=r)
        self._routed = Counter("sovcloud_routed", "requests sent to a backend", ["region", "backend"], registry=r)
        self._rejected = Counter("sovcloud_rejections", "refused requests by reason", ["reason"], registry=r)
        self._tokens = Counter("sovcloud_tokens", "metered tokens", ["model", "kind"], registry=r)
        self._failures = Counter("sovcloud_upstream_failures", "upstream failures", ["backend", "kind"], registry=r)
        if state is not None:
            r.register(_StateCollector(backend_ids, state))
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def request(self, endpoint: str, status: int, seconds: float, stream: bool) -> None:
        self._child(self._requests, endpoint, str(status)).inc()
        self._child(self._latency, endpoint, "true" if stream else "false").observe(seconds)

    def routed(self, region: str, backend: str) -> None:
        self._child(self._routed, region, backend).inc()

    def rejected(self, reason: str) -> None:
        self._child(self._rejected, reason).inc()

    def ttft(self, region: str, seconds: float) -> None:
        self._child(self._ttft, region).observe(seconds)

    def overhead(self, seconds: float) -> None:
        self._overhead.observe(seconds)

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self._child(self._tokens, model, "prompt").inc(prompt)
        if completion:
            self._child(self._tokens, model, "completion").inc(completion)

    def upstream_failure(self, backend: str, kind: str) -> None:
        self._child(self._failures, backend, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AccessLog:
    """Request log lines (same JSON shape as :class:`JsonFormatter`), buffered and written in blocks."""

    def __init__(self, stream: BinaryIO | None = None, name: str = "sovcloud.gateway.access",
                 max_buffer: int = 65536) -> None:
        self._stream, self._name, self._max = stream, name, max_buffer
        self._buf = bytearray()

    def write(self, msg: str, fields: dict[str, Any]) -> None:
        self._buf += orjson.dumps({"ts": round(time.time(), 6), "level": "info", "logger": self._name, "msg": msg,
                                   **fields}, default=str)
        self._buf += b"\n"
        if len(self._buf) >= self._max:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        stream = self._stream or getattr(sys.stderr, "buffer", None)
        try:
            if stream is not None:
                stream.write(bytes(self._buf))
                stream.flush()
            else:
                sys.stderr.write(self._buf.decode())
                sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken log stream must not break serving
            pass
        self._buf.clear()

    async def run(self, interval_s: float = 0.2) -> None:
        """Flush every ``interval_s`` until cancelled (then flush once more)."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                self.flush()
        finally:
            self.flush()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's ``fields`` (if any).

    ``ts`` is the record's Unix time; times this formatter writes as text (``formatTime``) are UTC, a setting
    of this formatter only (other formatters in the process keep their own)."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_json_logging(level: int = logging.INFO) -> None:
    """Send the ``sovcloud`` loggers to stderr as JSON lines (called by ``sovcloud serve`` / ``emulate``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("sovcloud")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
