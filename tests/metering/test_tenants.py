from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sovcloud.cli import app
from sovcloud.errors import ConfigError, UnknownEntity
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.tenants import KEY_PREFIX, ModelPrice, RateLimiter, Tenant, TenantStore

runner = CliRunner()

ACME = Tenant("acme", "Acme GmbH", "de", frozenset({"qwen3-8b"}), rpm=60, tpm=10_000,
              prices={"qwen3-8b": ModelPrice(0.1, 0.2), "*": ModelPrice(0.5, 1.5)})


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _db_bytes(url: str) -> bytes:
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_keys_are_hashed_at_rest(url: str) -> None:
    with TenantStore.open(url) as store:
        key = store.add(ACME)
    assert key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 43  # 32 random bytes
    assert key.encode() not in _db_bytes(url)  # neither in the database file nor in its WAL
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        rows = list(conn.execute("SELECT key_hash, tenant_id, key_prefix FROM tenant_keys"))
    finally:
        conn.close()
    assert rows == [(hashlib.sha256(key.encode()).hexdigest(), "acme", key[:12])]


def test_authenticate_round_trip_and_policy(url: str) -> None:
    with TenantStore.open(url) as store:
        key = store.add(ACME)
        t = store.authenticate(key)
        assert t == ACME
        assert t is not None and t.allows("qwen3-8b") and not t.allows("deepseek-r1")
        assert t.price("qwen3-8b") == ModelPrice(0.1, 0.2) and t.price("other") == ModelPrice(0.5, 1.5)
        assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert store.authenticate("Bearer " + key) is None
        assert store.authenticate("") is None
    with TenantStore.open(url) as fresh:  # loaded from the database
        assert fresh.authenticate(key) == ACME
        assert fresh.get("acme") == ACME and [x.id for x in fresh.list()] == ["acme"]
        with pytest.raises(UnknownEntity, match="tenant 'nope' is not known"):
            fresh.get("nope")
        with pytest.raises(ConfigError, match="already exists"):
            fresh.add(ACME)
        with pytest.raises(ConfigError, match="not valid"):
            fresh.add(Tenant("Bad Id", "x", "de"))
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=r"price of 'm'.*not a finite number"):
                fresh.add(Tenant("odd", "x", "de", prices={"m": ModelPrice(0.5, bad)}))
        assert [x.id for x in fresh.list()] == ["acme"]


def test_authenticate_is_served_from_memory(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with TenantStore.open(url) as store, TenantStore.open(url) as other:
        key = store.add(ACME)
        assert other.authenticate(key) == ACME  # first look-up: a key added by another process
        second = other.add_key("acme")

        def no_db(*args: object, **kw: object) -> None:
            raise AssertionError("database hit on the hot path")

        monkeypatch.setattr(other._engine, "connect", no_db)
        for _ in range(3):
            assert other.authenticate(key) == ACME
            assert other.authenticate(second) == ACME
        monkeypatch.undo()
        assert store.authenticate(second) == ACME
        assert store.key_prefixes("acme") == [key[:12], second[:12]]


def test_unknown_keys_are_looked_up_at_a_bounded_rate(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with TenantStore.open(url) as store:
        store._miss_rate = store._miss_budget = 3.0
        calls = 0
        real = store._engine.connect

        def counting() -> object:
            nonlocal calls
            calls += 1
            return real()

        monkeypatch.setattr(store._engine, "connect", counting)
        for i in range(20):
            assert store.authenticate(f"{KEY_PREFIX}random{i}") is None
        assert store.authenticate(f"{KEY_PREFIX}random0") is None
        assert calls == 3


def test_refresh_reloads(url: str) -> None:
    with TenantStore.open(url) as a, TenantStore.open(url) as b:
        a.add(ACME)
        assert [t.id for t in b.list()] == ["acme"]  # list() refreshes
        b.refresh()
        assert b.get("acme").rpm == 60


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _refused(lim: RateLimiter, tenant: Tenant, tokens: int) -> str | None:
    v = lim.check(tenant, tokens)
    assert v is not None
    return v.refused


def test_rate_limiter_rpm_tpm_refill_and_refund() -> None:
    clock = Clock()
    lim = RateLimiter(clock)
    t = Tenant("t", "T", "de", rpm=3, tpm=1000)
    assert [_refused(lim, t, 100) for _ in range(3)] == [None, None, None]
    v = lim.check(t, 100)
    assert v is not None and v.refused == "rpm" and v.retry_after_s == 20  # one request per 20 s
    clock.now = 20.0
    assert _refused(lim, t, 100) is None
    assert _refused(lim, t, 100) == "rpm"
    big = Tenant("b", "B", "de", tpm=600)
    clock.now = 0.0
    assert _refused(lim, big, 500) is None
    assert _refused(lim, big, 200) == "tpm"
    clock.now = 10.0
    assert _refused(lim, big, 200) is None  # 10 s refill 100 tokens: 200 available
    lim.refund(big, 400)
    assert _refused(lim, big, 400) is None
    clock.now = 1000.0
    too_big = lim.check(big, 601)  # more than a minute's allowance never fits: not a wait, a refusal
    assert too_big is not None and too_big.refused == "size" and too_big.retry_after_s == 0
    assert _refused(lim, big, 600) is None  # the refusal took nothing
    free = Tenant("f", "F", "de")
    assert all(lim.check(free, 10**9) is None for _ in range(1000))


@pytest.mark.parametrize(("rpm", "tpm", "first", "then"), [(2, None, [10, 10], 10), (None, 600, [500], 200),
                                                           (6, 1200, [300, 300], 900), (4, None, [1] * 4, 1)])
def test_retry_after_is_the_real_wait(rpm: int | None, tpm: int | None, first: list[int], then: int) -> None:
    """After the advertised retry-after the request is admitted; a tick earlier it is not."""
    clock = Clock()
    lim = RateLimiter(clock)
    t = Tenant("t", "T", "de", rpm=rpm, tpm=tpm)
    assert all(_refused(lim, t, n) is None for n in first)
    v = lim.check(t, then)
    assert v is not None and v.refused is not None and v.retry_after_s >= 1
    clock.now = v.retry_after_s - 0.001
    assert _refused(lim, t, then) is not None  # refusals take nothing
    clock.now = float(v.retry_after_s)
    assert _refused(lim, t, then) is None


def test_rate_state_remaining_and_reset() -> None:
    clock = Clock()
    lim = RateLimiter(clock)
    t = Tenant("t", "T", "de", rpm=2, tpm=600)
    v = lim.check(t, 150)
    assert v is not None and (v.rpm, v.tpm, v.requests_left, v.tokens_left) == (2, 600, 1, 450)
    assert (v.requests_reset_s, v.tokens_reset_s) == (30.0, 15.0)  # back to full: 1 request / 150 tokens
    v = lim.check(t, 150)
    assert v is not None and (v.requests_left, v.tokens_left, v.requests_reset_s) == (0, 300, 60.0)
    v = lim.check(t, 150)
    assert v is not None and v.refused == "rpm" and v.retry_after_s == 30 and v.requests_left == 0
    only_rpm = lim.check(Tenant("r", "R", "de", rpm=5), 10**9)
    assert only_rpm is not None and only_rpm.tpm is None and only_rpm.refused is None


# ---- CLI ------------------------------------------------------------------------------------------

def test_cli_add_grant_credit_show(url: str) -> None:
    r = runner.invoke(app, ["tenants", "add", "Acme GmbH", "--origin", "DE", "--models", "qwen3-8b,llama-3.1-70b",
                            "--rpm", "60", "--price", "*=0.5/1.5", "--price", "qwen3-8b=0.1/0.2", "--ledger", url])
    assert r.exit_code == 0, r.output
    key = r.output.split()[-1]
    assert key.startswith(KEY_PREFIX) and "shown once" in r.output
    with TenantStore.open(url) as store:
        t = store.authenticate(key)
    assert t is not None and (t.id, t.origin_zone, t.rpm, t.tpm) == ("acme-gmbh", "de", 60, None)
    assert t.allowed_models == frozenset({"qwen3-8b", "llama-3.1-70b"}) and t.prices["*"] == ModelPrice(0.5, 1.5)
    r = runner.invoke(app, ["tenants", "grant", "acme-gmbh", "2B", "--expires", "2099-01-01", "--ledger", url])
    assert r.exit_code == 0 and "granted 2,000,000,000 tokens" in r.output, r.output
    r = runner.invoke(app, ["tenants", "credit", "acme-gmbh", "12.5", "--ledger", url])
    assert r.exit_code == 0 and "US$12.500000" in r.output, r.output
    b = Ledger.open(url).balance("acme-gmbh")
    assert (b.grant_tokens, b.credit_micro) == (2_000_000_000, 12_500_000)
    r = runner.invoke(app, ["tenants", "show", "--ledger", url])
    assert r.exit_code == 0 and "acme-gmbh" in r.output and "2,000,000,000" in r.output, r.output
    r = runner.invoke(app, ["tenants", "show", "acme-gmbh", "--ledger", url])
    assert r.exit_code == 0 and "qwen3-8b=0.1/0.2" in r.output and key[:12] in r.output, r.output
    assert key not in r.output


@pytest.mark.parametrize(("args", "needle"), [
    (["--origin", "XX"], "--origin 'XX' is not a demand zone of scenario global-2025"),
    (["--origin", "de", "--models", "gpt-9"], "--models: 'gpt-9' is not a model of scenario global-2025"),
    (["--origin", "de", "--price", "qwen3-8b=cheap"], "--price 'qwen3-8b=cheap' is not model=input/output"),
    (["--origin", "de", "--price", "nope=1/2"], "'nope' is not a model of scenario"),
    (["--origin", "de", "--rpm", "0"], "--rpm 0 must be a positive integer"),
])
def test_cli_add_rejects_bad_values(url: str, args: list[str], needle: str) -> None:
    r = runner.invoke(app, ["tenants", "add", "X", *args, "--ledger", url])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output


def test_cli_grant_and_credit_reject_bad_values(url: str) -> None:
    assert runner.invoke(app, ["tenants", "add", "Acme", "--origin", "fr", "--ledger", url]).exit_code == 0
    cases = [
        (["grant", "nobody", "10"], "tenant 'nobody' is not known"),
        (["grant", "acme", "0"], "is not a positive number of tokens"),
        (["grant", "acme", "12x"], "is not a positive number of tokens"),
        (["grant", "acme", "10", "--expires", "2001-01-01"], "is in the past"),
        (["grant", "acme", "10", "--expires", "soon"], "is not an ISO date"),
        (["credit", "acme", "0"], "must be a positive amount"),
        (["credit", "acme", "inf"], "must be a positive amount"),
        (["credit", "acme", "nan"], "must be a positive amount"),
        (["add", "Acme", "--origin", "fr"], "tenant 'acme' already exists"),
    ]
    for args, needle in cases:
        r = runner.invoke(app, ["tenants", *args, "--ledger", url])
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output, (args, r.output)
