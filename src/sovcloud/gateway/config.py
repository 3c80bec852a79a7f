"""Gateway configuration: one YAML file, validated with pydantic, every error naming file, line, field, value and fix.

A minimal file (``sovcloud emulate --write-config`` writes a complete one)::

    plan: out/plan.json                 # the plan whose backends the gateway serves (required)
    ledger: sqlite:///gateway.db        # or postgresql://user@host/db (several gateways, one ledger)
    upstreams:
      default_url: http://127.0.0.1:8100/{backend}/v1
      backends:                          # per backend id "site/model/chip": a real vLLM/SGLang URL instead
        de-fra/qwen3-8b/h100-sxm: {url: http://vllm-fra:8000/v1, api_key_env: FRA_KEY, model: Qwen/Qwen3-8B}

Relative paths (plan, scenario, a ``sqlite:///relative.db``) resolve against the config file's folder.
:func:`load_gateway_config` returns a frozen :class:`GatewayConfig`; nothing here is global state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sovcloud.errors import ConfigError
from sovcloud.routing.backends import Backends, backends_for, load_plan
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.yamlio import dump_yaml, read_yaml
from sovcloud.world.compiled import World
from sovcloud.world.compiled import compile as compile_world

__all__ = [
    "BatchConfig",
    "BreakerConfig",
    "GatewayConfig",
    "HealthConfig",
    "LimitsConfig",
    "MeteringConfig",
    "UpstreamConfig",
    "UpstreamTarget",
    "UpstreamsConfig",
    "load_gateway_config",
    "plan_backends",
    "resolve_targets",
    "write_gateway_config",
]


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in v):  # it goes into the request line as it is
        raise ValueError("must not contain spaces or control characters (percent-encode them)")
    u = urlsplit(v.replace("{", "").replace("}", ""))  # default_url is a template: {site} and the like
    try:
        port = u.port
    except ValueError as exc:
        raise ValueError(f"has a bad port ({exc})") from None
    if not u.hostname or port == 0:
        raise ValueError("needs a host (and a port from 1 to 65535 if any), e.g. http://127.0.0.1:8000/v1")
    return v


class UpstreamConfig(_Cfg):
    """Where one backend id really runs (an OpenAI-compatible base URL ending in /v1)."""

    url: str = Field(description="base URL, e.g. http://vllm-fra:8000/v1")
    api_key_env: str | None = Field(None, description="environment variable holding the upstream's API key")
    model: str | None = Field(None, description="model name the upstream serves (default: the scenario's id)")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        return _http_url(v).rstrip("/")


class UpstreamsConfig(_Cfg):
    default_url: str | None = Field(None, description="template with {backend}, {site}, {model}, {chip}")
    client: Literal["aiohttp"] = Field("aiohttp", description="HTTP client to the upstreams: aiohttp, the only "
                                       "one (the setting is accepted for configs that name it)")
    backends: dict[str, UpstreamConfig] = Field(default_factory=dict)

    @field_validator("default_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @field_validator("client", mode="before")
    @classmethod
    def _only_aiohttp(cls, v: object) -> object:
        if v != "aiohttp":
            gone = " (the httptools client was removed)" if v == "httptools" else ""
            raise ValueError(f"aiohttp is the only upstream client{gone}")
        return v


class LimitsConfig(_Cfg):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger bodies get 413")
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024, description="larger audio uploads get 413 (OpenAI's "
                                  "limit for transcriptions: 25 MB)")
    body_timeout_s: float = Field(30.0, gt=0, description="a body not received whole within this time gets 408 "
                                                          "(e.g. a Content-Length larger than what is sent)")
    default_max_tokens: int = Field(1024, ge=1, description="reserved (and sent upstream) when a request names none")
    max_tokens_cap: int = Field(32768, ge=1, description="largest max_tokens a request may ask for")


class RoutingConfig(_Cfg):
    max_attempts: int = Field(3, ge=1, le=10, description="tries per request, each on another compliant backend")
    queue_factor: float = Field(1.0, ge=0, description="in-flight limit per backend = slots x (1 + queue_factor)")
    ttft_ewma: float = Field(0.2, gt=0, le=1, description="weight of a new TTFT observation")
    batch_wait_s: float = Field(600.0, gt=0, description="longest a deferred (batch) request waits for a spare "
                                "slot before a 503 batch_deferred_timeout")


class HealthConfig(_Cfg):
    interval_s: float = Field(2.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    path: str = Field("models", description="probed as GET {url}/{path}")
    failures_to_down: int = Field(2, ge=1)


class BreakerConfig(_Cfg):
    failures: int = Field(3, ge=1, description="consecutive upstream failures that open the breaker")
    cooldown_s: float = Field(5.0, gt=0, description="open time before the breaker is half-open and lets "
                              "half_open_trials trial requests through")
    half_open_trials: int = Field(1, ge=1, description="concurrent trial requests a half-open breaker admits; "
                                  "the others see the backend as unavailable")


class TimeoutsConfig(_Cfg):
    connect_s: float = Field(2.0, gt=0)
    first_byte_s: float = Field(120.0, gt=0, description="until the upstream's response headers")
    idle_s: float = Field(60.0, gt=0, description="longest silence inside a stream")
    keepalive_s: float = Field(15.0, gt=0, description="an SSE comment (': keep-alive') goes to the client after this "
                               "long without an event, so proxies and clients keep a slow stream open")


class MeteringConfig(_Cfg):
    mode: Literal["leased", "strict"] = Field(
        "leased", description="leased: admit and settle in memory against leases of balance, journal locally, write "
        "the database behind (no database wait per request); strict: every reservation and settlement is a "
        "database commit the request waits for")
    lease_tokens: int = Field(1_000_000, ge=1, description="grant tokens per lease")
    lease_usd: float = Field(1.0, ge=0, description="credit (US$) per lease")
    lease_fraction: float = Field(0.5, gt=0, le=1, description="a lease takes at most this share of what is "
                                  "available (the rest stays for other instances)")
    lease_idle_s: float = Field(5.0, gt=0, description="return a tenant's leases after this long without requests")
    write_behind_ms: float = Field(20.0, ge=0, le=10_000, description="leased: settled charges go to the database "
                                   "together this often (the journal holds them meanwhile); longer batches cost "
                                   "less CPU per request, and balance reads lag by as much")
    journal: str | None = Field(None, description="this instance's journal folder; default: beside an SQLite "
                                "ledger, else ~/.sovcloud/journal/<instance>")
    journal_fsync: bool = Field(False, description="fdatasync every journal record (survives an OS crash; slower)")


class BatchConfig(_Cfg):
    folder: str | None = Field(None, description="where uploaded files and batches are kept (default: beside an "
                               "SQLite ledger, <file>.batches, else ~/.sovcloud/batches)")
    concurrency: int = Field(16, ge=1, le=4096, description="lines of one batch in flight at once")
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1024, description="largest upload (OpenAI's limit: 200 MB)")
    max_lines: int = Field(50_000, ge=1, description="most requests in one batch input file (OpenAI's limit)")


class GatewayConfig(_Cfg):
    source: str = Field("<config>", exclude=True)
    plan: str
    scenario: str | None = Field(None, description="default: the scenario the plan names")
    period: int | None = Field(None, description="default: the plan's last period")
    ledger: str | None = Field(None, description="database URL; default: sovcloud.metering.ledger.default_ledger_url()")
    tenants: str | None = Field(None, description="tenant store URL; default: the ledger's")
    upstreams: UpstreamsConfig = Field(default_factory=UpstreamsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    progress_every_tokens: int = Field(16, ge=1, description="streamed tokens between durable ledger progress marks")
    log_requests: bool = Field(True, description="one JSON log line per request")
    overlap_reservation: bool = Field(False, description="send upstream while the ledger reserves (nothing reaches "
                                      "the client before the reservation holds; refused requests waste upstream work)")
    instance_id: str | None = Field(None, description="ledger instance id (default: host:port); recovery after a "
                                    "crash settles this instance's pending reservations")
    tenant_refresh_s: float = Field(30.0, gt=0, description="reload tenants (policy changes) this often")
    metering: MeteringConfig = Field(default_factory=MeteringConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)


_HINTS = {
    "plan": "give the plan.json written by `sovcloud plan`",
    "url": "give an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1",
    "extra_forbidden": "remove it or check its spelling (see docs/gateway-server.md)",
    "client": "remove upstreams.client or set it to aiohttp",
}


def _resolve_url(base: Path, value: str | None) -> str | None:
    """A relative ``sqlite:///file.db`` resolves against the config's folder; other URLs stay."""
    if value is None or not value.startswith("sqlite:///") or value.startswith("sqlite:////") or ":memory:" in value:
        return value
    return "sqlite:///" + str((base / value[len("sqlite:///"):]).resolve())


def _resolve_path(base: Path, value: str | None) -> str | None:
    """A path (with a slash or a .yaml/.json suffix) resolves against the config's folder; a bare name stays."""
    if value is None or not ("/" in value or value.endswith((".yaml", ".yml", ".json"))):
        return value
    return str((base / value).resolve())


def load_gateway_config(path: Path | str) -> GatewayConfig:
    """Read and validate a gateway config file (raises :class:`ConfigError` naming what to fix)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such gateway config; write one with "
                          "`sovcloud emulate --plan out/plan.json --write-config gateway.yaml`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the gateway config ({exc}); save it as UTF-8 YAML") from None
    doc, problems = read_yaml(text, str(p))
    if (doc is None and problems[0].field == "(document)") or (doc is not None and not isinstance(doc.data, dict)):
        raise ConfigError(f"{p}: expected a mapping of settings such as plan: and upstreams:; "
                          "fix: start from the file `sovcloud emulate --write-config` writes")
    if doc is None:
        raise ConfigError(problems[0].render())
    data: dict[str, Any] = dict(doc.data)
    try:
        cfg = GatewayConfig.model_validate({**data, "source": str(p)})
    except ValidationError as exc:
        e = exc.errors()[0]
        where = tuple(e["loc"])
        file, line = doc.locate(where)
        field = ".".join(str(x) for x in where)
        hint = _HINTS.get(e["type"], _HINTS.get(str(where[-1]) if where else "", "see docs/gateway-server.md"))
        at = f"{file}:{line}" if line is not None else file
        raise ConfigError(f"{at}: {field}: {e['msg']} (got {e.get('input')!r}); fix: {hint}") from None
    base = p.resolve().parent
    return cfg.model_copy(update={"plan": str((base / cfg.plan).resolve()),
                                  "scenario": _resolve_path(base, cfg.scenario),
                                  "ledger": _resolve_url(base, cfg.ledger), "tenants": _resolve_url(base, cfg.tenants),
                                  "metering": cfg.metering.model_copy(update={
                                      "journal": None if cfg.metering.journal is None
                                      else str((base / cfg.metering.journal).resolve())}),
                                  "batch": cfg.batch.model_copy(update={
                                      "folder": None if cfg.batch.folder is None
                                      else str((base / cfg.batch.folder).resolve())})})


class UpstreamTarget(BaseModel):
    """The resolved upstream of one backend: URL, key and the model name to send."""

    model_config = ConfigDict(frozen=True)
    backend_id: str
    url: str
    api_key: str | None
    model: str


def resolve_targets(cfg: GatewayConfig, backend_ids: tuple[str, ...]) -> tuple[UpstreamTarget, ...]:
    """One target per backend id, from ``upstreams.backends`` or the ``default_url`` template."""
    unknown = sorted(set(cfg.upstreams.backends) - set(backend_ids))
    if unknown:
        raise ConfigError(f"{cfg.source}: upstreams.backends: '{unknown[0]}' is not a backend of the plan; fix: use "
                          f"one of {', '.join(backend_ids[:6]) or '(none: the plan has no deployments)'}")
    out = []
    for bid in backend_ids:
        site, model, chip = (bid.split("/") + ["", "", ""])[:3]
        up = cfg.upstreams.backends.get(bid)
        if up is None:
            if cfg.upstreams.default_url is None:
                raise ConfigError(f"{cfg.source}: upstreams: backend '{bid}' has no URL; fix: add it under "
                                  "upstreams.backends or set upstreams.default_url")
            url = cfg.upstreams.default_url.format(backend=bid, site=site, model=model, chip=chip).rstrip("/")
            up = UpstreamConfig(url=url)
        key = None
        if up.api_key_env is not None:
            key = os.environ.get(up.api_key_env)
            if key is None:
                raise ConfigError(f"{cfg.source}: upstreams.backends.{bid}.api_key_env: environment variable "
                                  f"{up.api_key_env} is not set; fix: export it before `sovcloud serve`")
            if any(c in key for c in "\r\n\0"):  # it becomes a header line; the value is a secret, not shown
                raise ConfigError(f"{cfg.source}: upstreams.backends.{bid}.api_key_env: environment variable "
                                  f"{up.api_key_env} holds a line break or NUL; fix: export the key alone")
        out.append(UpstreamTarget(backend_id=bid, url=up.url, api_key=key, model=up.model or model))
    return tuple(out)


def write_gateway_config(path: Path, plan: Path, default_url: str, ledger: str | None = None) -> None:
    """Write a ready-to-serve config pointing every backend at ``default_url`` (the emulator)."""
    data: dict[str, Any] = {"plan": str(plan.resolve()), "upstreams": {"default_url": default_url}}
    if ledger is not None:
        data["ledger"] = ledger
    head = "# sovcloud gateway config (see docs/gateway-server.md); serve with: sovcloud serve --config this-file\n"
    try:
        path.write_text(head + dump_yaml(data), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}; choose another --write-config file") from None


def plan_backends(plan: str | Path, scenario: str | None = None, period: int | None = None) -> tuple[World, Backends]:
    """The compiled world (the plan's scenario unless ``scenario`` is given) and the plan's backends."""
    doc = load_plan(plan)
    world = compile_world(load_scenario(scenario or doc.scenario.source))
    return world, backends_for(doc, world, period)
