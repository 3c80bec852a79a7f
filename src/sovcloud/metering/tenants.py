"""Tenants of the gateway: their API keys (hashed at rest), policy and prices; per-instance rate limits.

* **Keys** are ``sk-sov-`` + 32 random bytes (URL-safe base64). Only ``sha256(key)`` is stored. A fast
  hash is right here: the key has 256 bits of entropy, so no dictionary or brute-force attack on a leaked
  hash is feasible, and slow password hashes (bcrypt, argon2) exist only to stretch low-entropy human
  passwords. :meth:`TenantStore.authenticate` hashes the presented key (about a microsecond), finds the
  entry by the hash's first 64 bits in an in-memory dict (O(1)) and compares the full hash with
  :func:`hmac.compare_digest` (constant time); any timing side channel could only reveal bits of a hash,
  which do not help to find a key. The database is read on the first
  miss of a hash (a key added by another process since); misses are remembered (bounded) and such
  look-ups are limited to ``miss_lookups_per_s`` so random keys cannot flood the database.
* **Policy** per tenant: the data-origin zone (a demand zone of the scenario; the residency rule comes
  from the scenario's rules for that zone), the allowed models, RPM/TPM limits and per-model prices
  (US$ per million input/output tokens, ``"*"`` the default). Grants and credits live in the ledger.
* **Rate limits** (:class:`RateLimiter`) are token buckets in memory, **per gateway instance**: with N
  instances behind a balancer a tenant can reach up to N times its limits. (Spend is never
  per instance: the ledger is shared.)
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from sovcloud.errors import ConfigError, LedgerError, UnknownEntity
from sovcloud.metering.db import LedgerDB, make_engine, redact_url

__all__ = ["KEY_PREFIX", "ModelPrice", "RateLimiter", "RateState", "Tenant", "TenantStore", "hash_key",
           "tenant_metadata"]

KEY_PREFIX = "sk-sov-"
_SLACK_S = 1e-6  # a bucket this close to fitting fits: float rounding never turns an exact wait into one more second
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

tenant_metadata = sa.MetaData()
_tenants = sa.Table(
    "tenants", tenant_metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("origin_zone", sa.String(64), nullable=False),
    sa.Column("allowed_models", sa.Text, nullable=True),  # JSON list; NULL = every model
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.BigInteger, nullable=True),
    sa.Column("prices", sa.Text, nullable=False),  # JSON {model: [input, output]} US$ per Mtok
    sa.Column("created_at", sa.Float, nullable=False),
)
_keys = sa.Table(
    "tenant_keys", tenant_metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # hex sha256 of the key
    sa.Column("tenant_id", sa.String(128), nullable=False, index=True),
    sa.Column("key_prefix", sa.String(16), nullable=False),  # the first characters, to tell keys apart
    sa.Column("created_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class ModelPrice:
    """US$ per million tokens."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float


@dataclass(frozen=True)
class Tenant:
    """One customer of the gateway."""

    id: str
    name: str
    origin_zone: str  # scenario demand-zone id of the tenant's data origin
    allowed_models: frozenset[str] | None = None  # None = every model
    rpm: int | None = None  # None = unlimited
    tpm: int | None = None
    prices: Mapping[str, ModelPrice] = field(default_factory=dict, hash=False)

    def allows(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, else the default ``"*"``, else None (grants only)."""
        return self.prices.get(model) or self.prices.get("*")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _tenant_from_row(row: Any) -> Tenant:
    models = json.loads(row.allowed_models) if row.allowed_models is not None else None
    prices = {m: ModelPrice(float(p[0]), float(p[1])) for m, p in json.loads(row.prices).items()}
    return Tenant(row.id, row.name, row.origin_zone, frozenset(models) if models is not None else None,
                  row.rpm, row.tpm, prices)


class TenantStore:
    """Tenants and their key hashes in the ledger's database, cached in memory."""

    def __init__(self, db: LedgerDB, *, miss_lookups_per_s: float = 50.0, miss_cache: int = 10_000) -> None:
        self._db = db
        self._engine = make_engine(db)
        self._by_hash: dict[str, tuple[str, Tenant]] = {}  # first 16 hex digits -> (full hash, tenant)
        self._by_id: dict[str, Tenant] = {}
        self._misses: set[str] = set()
        self._miss_cache = miss_cache
        self._miss_rate = miss_lookups_per_s
        self._miss_budget = miss_lookups_per_s
        self._miss_at = time.monotonic()

    @classmethod
    def open(cls, url: str) -> TenantStore:
        """Open (creating the tables if absent) and load every tenant and key hash."""
        db = LedgerDB.parse(url)
        db.create_schema(tenant_metadata)
        store = cls(db)
        try:
            store.refresh()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> TenantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, exc: SQLAlchemyError) -> LedgerError:
        orig = getattr(exc, "orig", None) or exc
        return LedgerError(f"tenant store {redact_url(self._db.url)}: {str(orig).strip().splitlines()[0]}")

    def refresh(self) -> None:
        """Reload every tenant and key hash from the database."""
        try:
            with self._engine.connect() as conn:
                by_id = {r.id: _tenant_from_row(r) for r in conn.execute(sa.select(_tenants))}
                keys = [(str(h), str(t)) for h, t in conn.execute(sa.select(_keys.c.key_hash, _keys.c.tenant_id))]
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        self._by_id = by_id
        self._by_hash = {h[:16]: (h, by_id[t]) for h, t in keys if t in by_id}
        self._misses.clear()

    def add(self, tenant: Tenant) -> str:
        """Store a new tenant and return its first API key (shown once; only its hash is kept)."""
        if not _ID_RE.match(tenant.id):
            raise ConfigError(f"tenant id {tenant.id!r} is not valid; use lowercase letters, digits, '.', '_', '-'")
        for m, p in sorted(tenant.prices.items()):
            if not (math.isfinite(p.input_usd_per_mtok) and math.isfinite(p.output_usd_per_mtok)):
                raise ConfigError(f"tenant {tenant.id!r}: the price of {m!r} ({p.input_usd_per_mtok}/"
                                  f"{p.output_usd_per_mtok}) is not a finite number of US$ per million tokens; "
                                  "e.g. 0.5/1.5")
        prices = {m: [p.input_usd_per_mtok, p.output_usd_per_mtok] for m, p in tenant.prices.items()}
        models = json.dumps(sorted(tenant.allowed_models)) if tenant.allowed_models is not None else None
        row = {"id": tenant.id, "name": tenant.name, "origin_zone": tenant.origin_zone, "allowed_models": models,
               "rpm": tenant.rpm, "tpm": tenant.tpm, "prices": json.dumps(prices, sort_keys=True),
               "created_at": time.time()}
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._engine.begin() as conn:
                conn.execute(_tenants.insert().values(**row))
                conn.execute(_keys.insert().values(key_hash=hash_key(key), tenant_id=tenant.id,
                                                   key_prefix=key[:12], created_at=time.time()))
        except IntegrityError as exc:
            raise ConfigError(f"tenant {tenant.id!r} already exists; choose another name or --id") from exc
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        self._by_id[tenant.id] = tenant
        self._remember(hash_key(key), tenant)
        return key

    def add_key(self, tenant_id: str) -> str:
        """Another API key for an existing tenant (key rotation); returned once."""
        tenant = self.get(tenant_id)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._engine.begin() as conn:
                conn.execute(_keys.insert().values(key_hash=hash_key(key), tenant_id=tenant.id,
                                                   key_prefix=key[:12], created_at=time.time()))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        self._remember(hash_key(key), tenant)
        return key

    def authenticate(self, api_key: str) -> Tenant | None:
        """The tenant owning ``api_key``, or None. O(1) from memory after a key's first look-up."""
        if not api_key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(api_key)
        entry = self._by_hash.get(digest[:16])
        if entry is not None and hmac.compare_digest(entry[0], digest):
            return entry[1]
        if digest in self._misses or not self._may_look_up():
            return None
        try:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(_tenants).join(_keys, _keys.c.tenant_id == _tenants.c.id)
                                   .where(_keys.c.key_hash == digest)).first()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        if row is None:
            if len(self._misses) >= self._miss_cache:
                self._misses.clear()
            self._misses.add(digest)
            return None
        tenant = _tenant_from_row(row)
        self._by_id[tenant.id] = tenant
        self._remember(digest, tenant)
        return tenant

    def _remember(self, digest: str, tenant: Tenant) -> None:
        self._by_hash[digest[:16]] = (digest, tenant)
        self._misses.discard(digest)

    def _may_look_up(self) -> bool:
        now = time.monotonic()
        self._miss_budget = min(self._miss_rate, self._miss_budget + (now - self._miss_at) * self._miss_rate)
        self._miss_at = now
        if self._miss_budget < 1.0:
            return False
        self._miss_budget -= 1.0
        return True

    def get(self, tenant_id: str) -> Tenant:
        tenant = self._by_id.get(tenant_id)
        if tenant is not None:
            return tenant
        try:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(_tenants).where(_tenants.c.id == tenant_id)).first()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        if row is None:
            known = ", ".join(sorted(self._by_id)[:10]) or "none yet"
            raise UnknownEntity(f"tenant {tenant_id!r} is not known (tenants: {known}); "
                                "see `sovcloud tenants show`")
        tenant = _tenant_from_row(row)
        self._by_id[tenant.id] = tenant
        return tenant

    def list(self) -> list[Tenant]:
        self.refresh()
        return sorted(self._by_id.values(), key=lambda t: t.id)

    def key_prefixes(self, tenant_id: str) -> builtins.list[str]:
        """The stored prefixes (``sk-sov-xxxxx``) of a tenant's keys, to tell them apart."""
        try:
            with self._engine.connect() as conn:
                return [r[0] for r in conn.execute(sa.select(_keys.c.key_prefix)
                                                   .where(_keys.c.tenant_id == tenant_id)
                                                   .order_by(_keys.c.created_at))]
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc


class RateState(NamedTuple):
    """A tenant's buckets as one request found them: the verdict, the real wait and what is left.

    ``refused`` is None (admitted and counted), ``"rpm"`` or ``"tpm"`` (wait ``retry_after_s`` whole seconds,
    rounded up, until the request fits) or ``"size"`` (the request exceeds a whole minute's TPM and can never
    fit). ``*_left`` are whole requests / tokens in the buckets after the check; ``*_reset_s`` the seconds until
    each bucket is full again. The token fields are 0 when the tenant has no TPM limit (``tpm`` None), the request
    fields likewise for RPM."""

    refused: str | None
    retry_after_s: int
    rpm: int | None
    tpm: int | None
    requests_left: int
    tokens_left: int
    requests_reset_s: float
    tokens_reset_s: float


class RateLimiter:
    """Per-tenant RPM and TPM token buckets, in memory, per gateway instance, on an injectable clock.

    A bucket holds up to one minute's allowance and refills continuously (``limit / 60`` per second), so
    a tenant may burst its whole minute at once and then proceeds at the limit's rate. A request counts
    1 against RPM and ``tokens`` (the gateway passes prompt + max_tokens) against TPM; it is admitted only
    when both buckets have room, and then takes from both. :meth:`refund` returns tokens not used.

    Each bucket is kept as the time ``e`` at which it was (or would have been) empty: its level at time ``t`` is
    ``min(limit, (t - e) * limit / 60)``. Taking ``c`` moves ``e`` forward by ``c * 60 / limit`` (from
    ``t - 60`` at the latest, a full bucket); a request of ``c`` fits once ``t >= e + c * 60 / limit`` (to within
    a microsecond), so the wait it is told is exactly the one its next check applies, and a refusal changes
    nothing. The clock (``time.monotonic`` by default) is read once per check.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # tenant -> [requests empty at, tokens empty at]

    def check(self, tenant: Tenant, tokens: int) -> RateState | None:
        """None for a tenant without limits; else the :class:`RateState` (admitted requests are counted)."""
        rpm, tpm = tenant.rpm, tenant.tpm
        if rpm is None and tpm is None:
            return None
        now = self._clock()
        b = self._buckets.get(tenant.id)
        if b is None:
            b = self._buckets[tenant.id] = [now - 60.0, now - 60.0]
        req_at = max(b[0], now - 60.0) + 60.0 / rpm if rpm is not None else now
        tok_at = max(b[1], now - 60.0) + tokens * 60.0 / tpm if tpm is not None else now
        late = now + _SLACK_S
        refused: str | None = None
        if tpm is not None and tokens > tpm:
            refused = "size"
        elif req_at > late:
            refused = "rpm"
        elif tok_at > late:
            refused = "tpm"
        else:
            if rpm is not None:
                b[0] = req_at
            if tpm is not None:
                b[1] = tok_at
        wait = math.ceil(max(req_at, tok_at) - late) if refused in ("rpm", "tpm") else 0
        req_full = max(0.0, b[0] + 60.0 - now) if rpm is not None else 0.0
        tok_full = max(0.0, b[1] + 60.0 - now) if tpm is not None else 0.0
        return RateState(refused, wait, rpm, tpm,
                         math.floor(rpm - req_full * rpm / 60.0 + 1e-9) if rpm is not None else 0,
                         math.floor(tpm - tok_full * tpm / 60.0 + 1e-9) if tpm is not None else 0,
                         req_full, tok_full)

    def refund(self, tenant: Tenant, tokens: int) -> None:
        """Give back ``tokens`` counted by :meth:`check` but not used (e.g. max_tokens not generated)."""
        b = self._buckets.get(tenant.id)
        if b is not None and tenant.tpm is not None and tokens > 0:
            b[1] -= tokens * 60.0 / tenant.tpm  # the bucket's cap applies at the next check
