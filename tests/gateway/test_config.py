"""Gateway configuration: errors name file, line, field, value and fix; upstream targets; written configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovcloud.errors import ConfigError
from sovcloud.gateway.app import build_gateway
from sovcloud.gateway.config import load_gateway_config, resolve_targets, write_gateway_config
from sovcloud.gateway.upstream import AiohttpUpstream
from sovcloud.metering.lease import LeasedLedger
from tests.support.gateway import tiny_plan

IDS = ("de-fra/qwen3-8b/h100-sxm", "us-ash/qwen3-8b/h100-sxm")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gw.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_errors_name_the_file_line_field_value_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such gateway config; write one with `sovcloud emulate"):
        load_gateway_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"gw.yaml:\d+: \(YAML syntax\)"):
        load_gateway_config(_write(tmp_path, "plan: p.json\nupstreams: {default_url: [\n"))
    with pytest.raises(ConfigError, match=r"gw.yaml:2: plann: Extra inputs are not permitted .*fix: remove it"):
        load_gateway_config(_write(tmp_path, "plan: p.json\nplann: q.json\n"))
    with pytest.raises(ConfigError, match=r"gw.yaml:3: limits.max_body_bytes: .*greater than or equal to 1024 "
                                          r"\(got 10\)"):
        load_gateway_config(_write(tmp_path, "plan: p.json\nlimits:\n  max_body_bytes: 10\n"))
    with pytest.raises(ConfigError, match=r"upstreams.backends.a/b/c.url: .*must start with http.*fix: give an "
                                          "OpenAI-compatible base URL"):
        load_gateway_config(_write(tmp_path, "plan: p.json\nupstreams:\n  backends:\n    a/b/c: {url: ftp://x}\n"))
    with pytest.raises(ConfigError, match=r"plan: Field required"):
        load_gateway_config(_write(tmp_path, "ledger: sqlite:///x.db\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_gateway_config(_write(tmp_path, "- 1\n"))


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, "plan: out/plan.json\nscenario: s/x.yaml\nledger: sqlite:///l.db\n"))
    assert cfg.plan == str(tmp_path / "out" / "plan.json") and cfg.scenario == str(tmp_path / "s" / "x.yaml")
    assert cfg.ledger == f"sqlite:///{tmp_path / 'l.db'}" and cfg.tenants is None
    cfg = load_gateway_config(_write(tmp_path, "plan: p.json\nscenario: global-2025\nledger: postgresql://u@h/db\n"))
    assert cfg.scenario == "global-2025" and cfg.ledger == "postgresql://u@h/db"


def test_upstream_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = ("plan: p.json\nupstreams:\n  default_url: http://emu:1/{site}/{model}/v1/\n  backends:\n"
            "    us-ash/qwen3-8b/h100-sxm: {url: 'https://vllm.us:8000/v1', api_key_env: US_KEY,\n"
            "                               model: Qwen/Qwen3-8B}\n")
    cfg = load_gateway_config(_write(tmp_path, text))
    with pytest.raises(ConfigError, match="environment variable US_KEY is not set"):
        resolve_targets(cfg, IDS)
    monkeypatch.setenv("US_KEY", "secret")
    de, us = resolve_targets(cfg, IDS)
    assert (de.url, de.model, de.api_key) == ("http://emu:1/de-fra/qwen3-8b/v1", "qwen3-8b", None)
    assert (us.url, us.model, us.api_key) == ("https://vllm.us:8000/v1", "Qwen/Qwen3-8B", "secret")
    with pytest.raises(ConfigError, match="'us-ash/qwen3-8b/h100-sxm' is not a backend of the plan"):
        resolve_targets(cfg, IDS[:1])
    monkeypatch.setenv("US_KEY", "secret\r\nX-Injected: 1")
    with pytest.raises(ConfigError, match="US_KEY holds a line break or NUL") as info:
        resolve_targets(cfg, IDS)
    assert "secret" not in str(info.value)  # the key itself is never shown
    for bad in ("http://emu:1/a b/v1", "http://emu:1/{site}/v1\\r\\nX: 1"):
        with pytest.raises(ConfigError, match=r"upstreams.default_url: .*spaces or control characters"):
            load_gateway_config(_write(tmp_path, f'plan: p.json\nupstreams:\n  default_url: "{bad}"\n'))
    for bad, what in (("http://emu:99999/v1", "bad port"), ("http:///v1", "needs a host")):
        with pytest.raises(ConfigError, match=rf"upstreams.default_url: .*{what}"):
            load_gateway_config(_write(tmp_path, f'plan: p.json\nupstreams:\n  default_url: "{bad}"\n'))
    bare = load_gateway_config(_write(tmp_path, "plan: p.json\n"))
    with pytest.raises(ConfigError, match=r"has no URL; fix: add it under upstreams\.backends"):
        resolve_targets(bare, IDS)


def test_written_config_loads(tmp_path: Path) -> None:
    out = tmp_path / "written.yaml"
    write_gateway_config(out, tmp_path / "plan.json", "http://127.0.0.1:8100/{backend}/v1", "sqlite:///g.db")
    cfg = load_gateway_config(out)
    assert cfg.plan == str(tmp_path / "plan.json") and cfg.ledger == f"sqlite:///{tmp_path / 'g.db'}"
    assert resolve_targets(cfg, IDS)[0].url == "http://127.0.0.1:8100/de-fra/qwen3-8b/h100-sxm/v1"
    with pytest.raises(ConfigError, match="cannot write"):
        write_gateway_config(tmp_path / "no" / "such" / "dir.yaml", tmp_path / "plan.json", "http://x/v1")


def test_metering_settings_reach_the_leased_ledger(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path)
    text = (f"plan: {plan}\nledger: sqlite:///l.db\nupstreams: {{default_url: 'http://127.0.0.1:9/{{backend}}/v1'}}\n"
            "metering:\n  write_behind_ms: 100\n  lease_idle_s: 7\n  lease_tokens: 5000\n")
    gw, _, _ = build_gateway(load_gateway_config(_write(tmp_path, text)), "cfg-test")
    led = gw.parts.ledger
    assert isinstance(led, LeasedLedger)
    try:
        opts = led.options
        assert (opts.write_behind_s, opts.idle_s, opts.tokens) == (0.1, 7.0, 5000)
    finally:
        led.journal.close()
        gw.parts.tenants.close()  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"gw.yaml:3: metering.write_behind_ms: .*greater than or equal to 0 "
                                          r"\(got -1\)"):
        load_gateway_config(_write(tmp_path, "plan: p.json\nmetering:\n  write_behind_ms: -1\n"))


def test_the_upstream_client_is_chosen_by_config(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path)
    base = f"plan: {plan}\nledger: sqlite:///l.db\nupstreams:\n  default_url: 'http://127.0.0.1:9/{{backend}}/v1'\n"
    for extra in ("", "  client: aiohttp\n"):
        gw, _, _ = build_gateway(load_gateway_config(_write(tmp_path, base + extra)), "cfg-test")
        try:
            assert type(gw.parts.upstream) is AiohttpUpstream
        finally:
            led = gw.parts.ledger
            assert isinstance(led, LeasedLedger)
            led.journal.close()
            gw.parts.tenants.close()  # type: ignore[attr-defined]
    for value, why in (("httptools", r" \(the httptools client was removed\)"), ("curl", "")):
        with pytest.raises(ConfigError, match=rf"gw.yaml:3: upstreams.client: .*aiohttp is the only upstream client"
                                              rf"{why} \(got '{value}'\); fix: remove upstreams.client or set it to "
                                              "aiohttp"):
            load_gateway_config(_write(tmp_path, f"plan: p.json\nupstreams:\n  client: {value}\n"))
