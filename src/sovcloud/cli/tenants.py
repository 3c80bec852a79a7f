"""``sovcloud tenants add|show|grant|credit`` (registered on the main app by :func:`register`).

Tenants and their keys live in the ledger database (``--ledger URL``, default ``$SOVCLOUD_LEDGER`` or
``~/.sovcloud/ledger.db``). ``add`` validates the origin zone and the models against a scenario
(``--scenario``, default global-2025) and prints the API key once; only its hash is stored.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from sovcloud.errors import UsageError
from sovcloud.vocab import DEFAULT_SCENARIO

from .common import cli_errors, out_console

if TYPE_CHECKING:
    from sovcloud.metering.tenants import ModelPrice

__all__ = ["parse_price", "parse_tokens", "register", "scenario_ids"]

_TOKENS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmbg]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}

LEDGER_OPT = typer.Option(None, "--ledger", help="ledger database URL (default $SOVCLOUD_LEDGER or "
                                                 "sqlite:///~/.sovcloud/ledger.db)")


@functools.lru_cache(maxsize=4)
def scenario_ids(scenario: str) -> tuple[frozenset[str], frozenset[str]]:
    """The demand-zone ids and model ids of a scenario (cached: loading takes a second)."""
    from sovcloud.scenario.loader import load_scenario

    sc = load_scenario(scenario)
    return frozenset(z.id for z in sc.demand.zones), frozenset(m.id for m in sc.models)


def _near(value: str, choices: frozenset[str]) -> str:
    close = difflib.get_close_matches(value, sorted(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def parse_tokens(text: str, option: str = "TOKENS") -> int:
    """``2000000000``, ``2_000_000_000``, ``2B``, ``500M``, ``10k`` -> tokens (positive)."""
    m = _TOKENS_RE.match(text.replace("_", ""))
    value = round(float(m.group(1)) * _SCALE[m.group(2).lower()]) if m else 0
    if value <= 0:
        raise UsageError(f"{option} {text!r} is not a positive number of tokens; e.g. 2000000000 or 2B")
    return value


def parse_price(text: str, models: frozenset[str], scenario: str) -> tuple[str, ModelPrice]:
    """``model=in/out`` (US$ per million input/output tokens; model ``*`` = the default price)."""
    from sovcloud.metering.tenants import ModelPrice

    model, eq, rest = text.partition("=")
    model = model.strip()
    pin, slash, pout = rest.partition("/")
    try:
        price = ModelPrice(float(pin), float(pout)) if eq and slash else None
    except ValueError:
        price = None
    if price is None or price.input_usd_per_mtok < 0 or price.output_usd_per_mtok < 0:
        raise UsageError(f"--price {text!r} is not model=input/output US$ per million tokens; "
                         "e.g. --price llama-3.1-70b=0.6/1.8 or --price '*=0.5/1.5'")
    if model != "*" and model not in models:
        raise UsageError(f"--price {text!r}: {model!r} is not a model of scenario {scenario}{_near(model, models)}; "
                         "use a catalog model id or '*'")
    return model, price


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64]


@cli_errors
def add_command(
    name: str = typer.Argument(..., help="tenant name (its id is derived from it unless --id is given)"),
    origin: str = typer.Option(..., "--origin", help="data-origin demand zone of the scenario, e.g. DE, FR, CN, BR"),
    models: str = typer.Option(None, "--models", help="comma-separated allowed models (default: every model)"),
    rpm: int = typer.Option(None, "--rpm", help="requests per minute (per gateway instance; default unlimited)"),
    tpm: int = typer.Option(None, "--tpm", help="tokens per minute (per gateway instance; default unlimited)"),
    price: list[str] = typer.Option(None, "--price", help="model=in/out US$ per million tokens, repeatable; "
                                                          "'*' sets the default"),
    tenant_id: str = typer.Option(None, "--id", help="tenant id (default: from the name)"),
    ledger: str = LEDGER_OPT,
    scenario: str = typer.Option(DEFAULT_SCENARIO, "--scenario", help="scenario whose zones and models are valid"),
) -> None:
    """Add a tenant and print its API key (shown once; only its hash is stored)."""
    from sovcloud.metering.ledger import default_ledger_url
    from sovcloud.metering.tenants import Tenant, TenantStore

    zones, known_models = scenario_ids(scenario)
    zone = origin.strip().lower()
    if zone not in zones:
        raise UsageError(f"--origin {origin!r} is not a demand zone of scenario {scenario}{_near(zone, zones)}; "
                         "use a zone id such as de, fr, cn or br (see `sovcloud show`)")
    allowed: frozenset[str] | None = None
    if models is not None:
        allowed = frozenset(m.strip() for m in models.split(",") if m.strip())
        unknown = sorted(allowed - known_models)
        if unknown or not allowed:
            bad = unknown[0] if unknown else models
            raise UsageError(f"--models: {bad!r} is not a model of scenario {scenario}{_near(bad, known_models)}; "
                             f"choose from {', '.join(sorted(known_models))}")
    for option, value in (("--rpm", rpm), ("--tpm", tpm)):
        if value is not None and value <= 0:
            raise UsageError(f"{option} {value} must be a positive integer (or leave it out for no limit)")
    prices = dict(parse_price(p, known_models, scenario) for p in (price or []))
    tid = tenant_id if tenant_id is not None else _slug(name)
    if not tid:
        raise UsageError(f"tenant name {name!r} gives an empty id; pass --id, e.g. --id acme")
    tenant = Tenant(tid, name, zone, allowed, rpm, tpm, prices)
    with TenantStore.open(ledger or default_ledger_url()) as store:
        key = store.add(tenant)
    out_console.print(f"tenant {tid} added (origin {zone}); API key, shown once, store it now:",
                      markup=False, highlight=False)
    out_console.print(key, markup=False, highlight=False)


def _tokens(n: int) -> str:
    return f"{n:,}"


@cli_errors
def show_command(
    tenant_id: str = typer.Argument(None, help="one tenant (default: every tenant)"),
    ledger: str = LEDGER_OPT,
) -> None:
    """Tenants with their policy and balance: grant tokens left, reserved and spent, credit US$."""
    from sovcloud.metering.ledger import Ledger, default_ledger_url
    from sovcloud.metering.tenants import TenantStore

    url = ledger or default_ledger_url()
    with TenantStore.open(url) as store:
        tenants = [store.get(tenant_id)] if tenant_id is not None else store.list()
        prefixes = {t.id: store.key_prefixes(t.id) for t in tenants} if tenant_id is not None else {}
    book = Ledger.open(url)
    table = Table(title=f"tenants in {book.url}")
    for col in ("id", "name", "origin", "models", "rpm/tpm", "grant tokens left", "reserved", "spent tokens",
                "credit US$", "spent US$", "in flight"):
        table.add_column(col, justify="left" if col in ("id", "name", "origin", "models") else "right",
                         no_wrap=col not in ("name", "models"))
    balances = {t.id: book.balance(t.id) for t in tenants}
    for t in tenants:
        b = balances[t.id]
        models = "all" if t.allowed_models is None else (
            ", ".join(sorted(t.allowed_models)) if len(t.allowed_models) <= 2 else f"{len(t.allowed_models)} models")
        table.add_row(t.id, t.name, t.origin_zone, models, f"{t.rpm or '-'}/{t.tpm or '-'}",
                      _tokens(b.grant_tokens), _tokens(b.reserved_tokens), _tokens(b.spent_tokens),
                      f"{b.credit_usd:,.2f}", f"{b.spent_usd:,.2f}", str(b.pending))
    out_console.print(table)
    if tenant_id is not None:
        t = tenants[0]
        b = balances[t.id]
        prices = ", ".join(f"{m}={p.input_usd_per_mtok:g}/{p.output_usd_per_mtok:g}"
                           for m, p in sorted(t.prices.items())) or "none (grants only)"
        lines = [
            f"models: {'all' if t.allowed_models is None else ', '.join(sorted(t.allowed_models))}",
            f"prices (US$ per million input/output tokens): {prices}",
            f"keys: {', '.join(p + '...' for p in prefixes[t.id]) or 'none'}",
            f"grants: {_tokens(b.granted_tokens)} tokens granted, {_tokens(b.grant_tokens)} left, "
            f"{_tokens(b.expired_tokens)} expired unused, {_tokens(b.reserved_tokens)} reserved, "
            f"{_tokens(b.spent_tokens)} spent",
            f"credit: US${b.credited_usd:,.6f} credited, {b.credit_usd:,.6f} left, {b.reserved_usd:,.6f} reserved, "
            f"{b.spent_usd:,.6f} spent; usage beyond every balance (unbilled): {_tokens(b.unbilled_tokens)} tokens",
        ]
        for line in lines:
            out_console.print(line, markup=False, highlight=False)
    if not tenants:
        out_console.print("no tenants yet; add one with `sovcloud tenants add NAME --origin DE`", markup=False)


@cli_errors
def grant_command(
    tenant_id: str = typer.Argument(..., help="tenant id"),
    tokens: str = typer.Argument(..., help="free tokens, e.g. 2000000000 or 2B"),
    expires: str = typer.Option(None, "--expires", help="expiry date or time (ISO, UTC), e.g. 2027-01-01"),
    ledger: str = LEDGER_OPT,
) -> None:
    """Give a tenant free tokens (prompt and completion alike), spent before its credits."""
    from sovcloud.metering.ledger import Ledger, default_ledger_url
    from sovcloud.metering.tenants import TenantStore

    amount = parse_tokens(tokens)
    when: datetime | None = None
    if expires is not None:
        try:
            when = datetime.fromisoformat(expires)
        except ValueError as exc:
            raise UsageError(f"--expires {expires!r} is not an ISO date; e.g. --expires 2027-01-01") from exc
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        if when <= datetime.now(UTC):
            raise UsageError(f"--expires {expires!r} is in the past; give a future date")
    url = ledger or default_ledger_url()
    with TenantStore.open(url) as store:
        store.get(tenant_id)
    Ledger.open(url).grant(tenant_id, amount, when)
    until = f" until {when.isoformat()}" if when is not None else " (no expiry)"
    out_console.print(f"granted {_tokens(amount)} tokens to {tenant_id}{until}", markup=False, highlight=False)


@cli_errors
def credit_command(
    tenant_id: str = typer.Argument(..., help="tenant id"),
    usd: float = typer.Argument(..., help="US$ to add, e.g. 250 or 12.50"),
    ledger: str = LEDGER_OPT,
) -> None:
    """Add US$ credit to a tenant (charged at the tenant's per-model prices once grants are spent)."""
    from sovcloud.metering.ledger import Ledger, default_ledger_url
    from sovcloud.metering.tenants import TenantStore

    if not (math.isfinite(usd) and usd > 0) or round(usd * 1_000_000) <= 0:
        raise UsageError(f"USD {usd} must be a positive amount (at least 0.000001), e.g. 250")
    url = ledger or default_ledger_url()
    with TenantStore.open(url) as store:
        store.get(tenant_id)
    Ledger.open(url).credit(tenant_id, usd)
    out_console.print(f"credited US${usd:,.6f} to {tenant_id}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``sovcloud tenants ...`` to ``app``."""
    tenants_app = typer.Typer(help="Tenants of the gateway: API keys, policy, free-token grants and US$ credits.",
                              no_args_is_help=True)
    tenants_app.command("add")(add_command)
    tenants_app.command("show")(show_command)
    tenants_app.command("grant")(grant_command)
    tenants_app.command("credit")(credit_command)
    app.add_typer(tenants_app, name="tenants")
