"""Observability: Prometheus metrics of a gateway (own registry, live router state) and JSON log lines."""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import orjson

from sovcloud.gateway.metrics import GatewayMetrics, JsonFormatter, configure_json_logging
from sovcloud.routing.router import LoadState


def test_metrics_render_requests_rejections_tokens_and_live_state() -> None:
    state = LoadState(healthy=np.array([True, False]), inflight=np.array([3.0, 0.0]), slots=np.ones(2),
                      service_s=np.ones(2), ttft_s=np.array([0.25, 0.5]), limit=np.ones(2))
    m = GatewayMetrics(("de/m/c", "us/m/c"), state)
    m.request("chat", 200, 0.012, True)
    m.request("chat", 200, 0.02, True)
    m.rejected("residency")
    m.routed("de", "de/m/c")
    m.tokens("m", 10, 5)
    m.ttft("de", 0.1)
    m.overhead(0.0004)
    m.upstream_failure("us/m/c", "connect")
    text = m.render().decode()
    for line in ('sovcloud_requests_total{endpoint="chat",status="200"} 2.0',
                 'sovcloud_rejections_total{reason="residency"} 1.0',
                 'sovcloud_routed_total{backend="de/m/c",region="de"} 1.0',
                 'sovcloud_tokens_total{kind="completion",model="m"} 5.0',
                 'sovcloud_upstream_failures_total{backend="us/m/c",kind="connect"} 1.0',
                 'sovcloud_backend_inflight{backend="de/m/c"} 3.0',
                 'sovcloud_backend_healthy{backend="us/m/c"} 0.0',
                 'sovcloud_request_seconds_bucket{endpoint="chat",le="0.025",stream="true"} 2.0',
                 "sovcloud_gateway_overhead_seconds_count 1.0"):
        assert line in text, line
    # a second gateway in the same process has its own counters
    assert "sovcloud_requests_total{" not in GatewayMetrics().render().decode()


def test_json_log_lines() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("sovcloud.test-json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("request", extra={"fields": {"request_id": "abc", "status": 200, "region": "de-fra"}})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())  # one JSON object per line
    assert first["msg"] == "request" and first["status"] == 200 and first["region"] == "de-fra"
    assert first["level"] == "info" and isinstance(first["ts"], float)
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


def test_json_logging_sets_utc_on_its_own_formatter_only() -> None:
    log = logging.getLogger("sovcloud")
    handlers, level, propagate = log.handlers[:], log.level, log.propagate
    try:
        configure_json_logging(logging.WARNING)
        (handler,) = log.handlers
        assert isinstance(handler.formatter, JsonFormatter) and handler.formatter.converter is time.gmtime
        assert logging.Formatter.converter is time.localtime  # the process-wide default is left alone
        assert logging.Formatter().converter is time.localtime
        record = logging.makeLogRecord({"created": 0.0, "msg": "x"})
        assert handler.formatter.formatTime(record, "%Y-%m-%d %H:%M") == "1970-01-01 00:00"
    finally:
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate
