"""The metering ledger's database: URLs, connections, schema (SQLAlchemy Core) and the SQL dialects.

Two back ends, one schema:

* **SQLite** (default, embedded): ``sqlite:///path/ledger.db``. The file is put in WAL mode with
  ``synchronous=NORMAL``: a committed transaction is in the WAL (written with ``write()``) before
  ``COMMIT`` returns, so it survives ``kill -9`` of the process; only an OS crash or power loss can
  lose the last transactions. ``sqlite:///path?synchronous=FULL`` fsyncs every commit instead. Writers
  serialise on ``BEGIN IMMEDIATE`` (several processes may share one file on one machine).
* **PostgreSQL** (several gateway instances sharing one ledger): ``postgresql://user@host:port/db``
  through psycopg 3. A batch locks the account rows of the tenants it touches
  (``SELECT ... ORDER BY tenant_id FOR UPDATE``), so admission decisions on one tenant are serialised
  across every instance, and the conditional arithmetic runs on the locked, current values.

The schema is created with SQLAlchemy Core (``CREATE ... IF NOT EXISTS``, under an advisory lock on
PostgreSQL); the hot path uses the raw DB-API connection of each driver (:class:`LedgerDB.connect`).
Amounts are integers: tokens, and money in micro-dollars (1e-6 US$).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from sovcloud.errors import LedgerError

__all__ = [
    "PG_START_HINT",
    "POSTGRES_EXTRA_HINT",
    "SCHEMA_VERSION",
    "DBConnection",
    "LedgerDB",
    "default_ledger_url",
    "ledger_metadata",
    "make_engine",
    "redact_url",
]

SCHEMA_VERSION = "1"
PG_START_HINT = "start PostgreSQL (e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)"
_ADVISORY_KEY = 0x50C10D  # pg_advisory_xact_lock key serialising schema creation

POSTGRES_EXTRA_HINT = "install the PostgreSQL driver with `pip install 'sovcloud[postgres]'`"


def _psycopg() -> Any:
    """The psycopg 3 module, imported on first use: only a PostgreSQL ledger needs it (the ``postgres`` extra)."""
    try:
        return importlib.import_module("psycopg")
    except ImportError as exc:
        raise LedgerError(f"a postgresql:// ledger needs the psycopg driver, which is not installed; "
                          f"{POSTGRES_EXTRA_HINT}, or use the default sqlite:/// ledger") from exc


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The DB-API error bases of the drivers loaded so far (psycopg only once a PostgreSQL ledger imported it)."""
    pg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if pg is None else (sqlite3.Error, pg.Error)


ledger_metadata = sa.MetaData()

sa.Table(
    "ledger_meta", ledger_metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
sa.Table(  # one row per tenant: the credit (US$) pot, in micro-dollars; credited = available + reserved + spent
    "ledger_accounts", ledger_metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("credited", sa.BigInteger, nullable=False),
    sa.Column("credit_available", sa.BigInteger, nullable=False),
    sa.Column("credit_reserved", sa.BigInteger, nullable=False),
    sa.Column("credit_spent", sa.BigInteger, nullable=False),
    sa.Column("unbilled_tokens", sa.BigInteger, nullable=False),
)
sa.Table(  # one row per free-token grant; granted = available + reserved + spent
    "ledger_grants", ledger_metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(128), nullable=False, index=True),
    sa.Column("granted", sa.BigInteger, nullable=False),
    sa.Column("available", sa.BigInteger, nullable=False),
    sa.Column("reserved", sa.BigInteger, nullable=False),
    sa.Column("spent", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),  # unix seconds; NULL = never
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table(  # the journal of money and tokens put in (grants, credits); the audit's independent source
    "ledger_entries", ledger_metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(128), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # grant | credit
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("micro", sa.BigInteger, nullable=False),
    sa.Column("grant_id", sa.BigInteger, nullable=True),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table(  # one row per request: the reservation, then its settlement (the usage record)
    "ledger_reservations", ledger_metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("request_id", sa.String(256), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("instance_id", sa.String(128), nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),  # 0 pending, 1 settled, 2 released
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("max_tokens", sa.BigInteger, nullable=False),
    sa.Column("price_in", sa.BigInteger, nullable=False),  # pico-dollars per token; -1 = no price
    sa.Column("price_out", sa.BigInteger, nullable=False),
    sa.Column("grant_parts", sa.Text, nullable=False),  # "grant_id:tokens,..." reserved from grants
    sa.Column("credit_micro", sa.BigInteger, nullable=False),  # reserved from credits
    sa.Column("progress", sa.BigInteger, nullable=False),  # durable mark of completion tokens delivered
    sa.Column("used_prompt", sa.BigInteger, nullable=False),
    sa.Column("used_completion", sa.BigInteger, nullable=False),
    sa.Column("charged_parts", sa.Text, nullable=False),  # "grant_id:tokens,..." spent from grants
    sa.Column("charged_micro", sa.BigInteger, nullable=False),  # spent from credits
    sa.Column("unbilled_tokens", sa.BigInteger, nullable=False),  # usage beyond every balance (recorded)
    sa.Column("recovered", sa.SmallInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("settled_at", sa.Float, nullable=True),
    # only pending rows are indexed (for recovery): the index stays a page or two however long the history
    sa.Index("ix_ledger_reservations_pending", "instance_id", sqlite_where=sa.text("state = 0"),
             postgresql_where=sa.text("state = 0")),
    sqlite_with_rowid=False,  # one B-tree keyed by the reservation id instead of rowid table + id index
)
sa.Table(  # one row per lease: grant tokens and credit moved to one gateway instance, which admits and settles
    # requests against them in memory (sovcloud.metering.lease); held = taken - charged, returned when closed
    "ledger_leases", ledger_metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("instance_id", sa.String(128), nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),  # 0 open, 2 closed
    sa.Column("taken_parts", sa.Text, nullable=False),  # "grant_id:tokens,..." moved to the lease when made
    sa.Column("taken_micro", sa.BigInteger, nullable=False),
    sa.Column("grant_parts", sa.Text, nullable=False),  # "grant_id:tokens,..." still held (reserved)
    sa.Column("credit_micro", sa.BigInteger, nullable=False),  # credit still held (reserved)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float, nullable=True),
    sa.Index("ix_ledger_leases_open", "tenant_id", "instance_id", sqlite_where=sa.text("state = 0"),
             postgresql_where=sa.text("state = 0")),
    sqlite_with_rowid=False,
)


def default_ledger_url() -> str:
    """``$SOVCLOUD_LEDGER`` or an SQLite file ``~/.sovcloud/ledger.db``."""
    env = os.environ.get("SOVCLOUD_LEDGER")
    if env:
        return env
    return f"sqlite:///{Path.home() / '.sovcloud' / 'ledger.db'}"


def redact_url(url: str) -> str:
    """The URL with any password hidden (for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


class DBConnection(Protocol):
    """The DB-API surface used on the hot path (sqlite3.Connection and psycopg.Connection both fit)."""

    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class LedgerDB:
    """A parsed ledger URL: which back end, where, and the dialect details of its SQL."""

    url: str
    kind: Literal["sqlite", "postgresql"]
    target: str  # the SQLite file path, or the psycopg conninfo URI
    synchronous: str = "NORMAL"

    @classmethod
    def parse(cls, url: str) -> LedgerDB:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:
            raise LedgerError(f"ledger URL {url!r} cannot be parsed; use sqlite:///path/ledger.db or "
                              "postgresql://user@host:5432/db") from exc
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            db = parsed.database
            if not db or db == ":memory:" or db.startswith("file:"):
                raise LedgerError(f"ledger URL {url!r} needs a file path; use sqlite:///path/ledger.db")
            sync = str(parsed.query.get("synchronous", "NORMAL")).upper()
            if sync not in ("NORMAL", "FULL", "EXTRA"):
                raise LedgerError(f"ledger URL {url!r}: synchronous={sync} is not allowed; use NORMAL or FULL")
            return cls(url, "sqlite", str(Path(db).expanduser()), sync)
        if backend == "postgresql":
            if parsed.get_driver_name() not in ("psycopg", "psycopg2", "psycopg_async", "postgresql"):
                raise LedgerError(f"ledger URL {url!r}: use postgresql:// (psycopg 3 is the driver)")
            target = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            _psycopg()  # fail here, with the extra to install, rather than at the first connection
            return cls(url, "postgresql", target)
        raise LedgerError(f"ledger URL {redact_url(url)!r}: unsupported database {backend!r}; "
                          "use sqlite:///path/ledger.db or postgresql://user@host:5432/db")

    # ---- dialect details -------------------------------------------------------------------------
    @property
    def ph(self) -> str:
        """The DB-API placeholder."""
        return "?" if self.kind == "sqlite" else "%s"

    @property
    def for_update(self) -> str:
        return "" if self.kind == "sqlite" else " FOR UPDATE"

    def in_list(self, column: str, values: list[str]) -> tuple[str, list[Any]]:
        """``column IN (...)`` for ``values`` (``= ANY(%s)`` on PostgreSQL): SQL and parameters."""
        if self.kind == "sqlite":
            return f"{column} IN ({','.join('?' * len(values))})", list(values)
        return f"{column} = ANY(%s)", [list(values)]

    def sql(self, text: str) -> str:
        """Turn ``?`` placeholders into the back end's placeholder."""
        return text if self.kind == "sqlite" else text.replace("?", "%s")

    # ---- connections --------------------------------------------------------------------------
    def connect(self) -> Any:
        """A raw DB-API connection in manual transaction mode (``begin``/``commit``/``rollback``)."""
        try:
            if self.kind == "sqlite":
                Path(self.target).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False, timeout=30.0)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(f"PRAGMA synchronous={self.synchronous}")
                    conn.execute("PRAGMA busy_timeout=30000")
                except sqlite3.Error:
                    conn.close()
                    raise
                return conn
            return _psycopg().connect(self.target, autocommit=True, connect_timeout=10)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open the ledger database {self.target}: {exc}; "
                              "check the path and its permissions or choose another --ledger URL") from exc
        except _driver_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LedgerError(f"cannot connect to the ledger database {redact_url(self.url)}: {first}; "
                              f"{PG_START_HINT} or choose another --ledger URL") from exc

    def pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """A psycopg pipeline (statements sent together, one round trip); nothing on SQLite."""
        return conn.pipeline() if self.kind == "postgresql" else contextlib.nullcontext()

    def bulk_insert(self, cur: Any, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """INSERT ``rows``: ``executemany`` on SQLite, one ``INSERT ... SELECT FROM unnest(arrays)`` on PostgreSQL."""
        if self.kind == "sqlite":
            cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})", rows)
            return
        arrays = ", ".join(f"%b::{_pg_type(table, c)}[]" for c in cols)
        cur.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest({arrays})",
                    [list(col) for col in zip(*rows, strict=True)])

    def bulk_update(self, cur: Any, table: str, key: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """UPDATE ``cols`` of the rows whose ``key`` is each row's last value: ``executemany`` on SQLite,
        one ``UPDATE ... FROM unnest(arrays)`` on PostgreSQL."""
        if self.kind == "sqlite":
            sets = ", ".join(f"{c}=?" for c in cols)
            cur.executemany(f"UPDATE {table} SET {sets} WHERE {key}=?", rows)
            return
        names = (*cols, key)
        arrays = ", ".join(f"%b::{_pg_type(table, c)}[]" for c in names)
        sets = ", ".join(f"{c}=v.{c}" for c in cols)
        cur.execute(f"UPDATE {table} AS t SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) "
                    f"WHERE t.{key} = v.{key}", [list(col) for col in zip(*rows, strict=True)])

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")

    @staticmethod
    def commit(conn: Any) -> None:
        conn.execute("COMMIT")

    @staticmethod
    def rollback(conn: Any) -> None:
        if conn is not None:
            with contextlib.suppress(*_driver_errors()):
                conn.execute("ROLLBACK")

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool:
        """Whether ``conn`` is unusable after ``exc`` (and must be reopened)."""
        if self.kind == "postgresql":
            return conn is None or bool(conn.closed) or bool(conn.broken)
        return False

    @property
    def db_errors(self) -> tuple[type[BaseException], ...]:
        return _driver_errors()

    # ---- schema ---------------------------------------------------------------------------------
    def create_schema(self, metadata: sa.MetaData, *, version_key: str | None = None) -> None:
        """Create the tables of ``metadata`` if absent; check (or record) the schema version."""
        try:
            engine = make_engine(self)
        except OSError as exc:
            raise LedgerError(f"cannot open the ledger database {self.target}: {exc}; "
                              "check the path and its permissions or choose another --ledger URL") from exc
        try:
            with engine.begin() as conn:
                if self.kind == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
                for table in metadata.sorted_tables:
                    conn.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        conn.execute(CreateIndex(index, if_not_exists=True))
                if version_key is not None:
                    meta = metadata.tables["ledger_meta"]
                    row = conn.execute(sa.select(meta.c.value).where(meta.c.key == version_key)).first()
                    if row is None:
                        conn.execute(meta.insert().values(key=version_key, value=SCHEMA_VERSION))
                    elif row[0] != SCHEMA_VERSION:
                        raise LedgerError(f"ledger database {redact_url(self.url)} has schema version {row[0]}, "
                                          f"this sovcloud needs {SCHEMA_VERSION}; use a new ledger URL")
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            hint = PG_START_HINT if self.kind == "postgresql" else "check the path and its permissions"
            raise LedgerError(f"cannot open the ledger database {redact_url(self.url)}: {first}; "
                              f"{hint} or choose another --ledger URL") from exc
        finally:
            engine.dispose()


def _pg_type(table: str, column: str) -> str:
    """The PostgreSQL type name of a ledger column (for unnest array casts)."""
    kind = ledger_metadata.tables[table].c[column].type
    if isinstance(kind, sa.SmallInteger):
        return "smallint"
    if isinstance(kind, sa.BigInteger | sa.Integer):
        return "bigint"
    if isinstance(kind, sa.Float):
        return "double precision"
    return "text"


def make_engine(db: LedgerDB) -> sa.Engine:
    """An SQLAlchemy engine (no pooling: each use opens and closes its connection) for ``db``."""
    if db.kind == "sqlite":
        Path(db.target).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(f"sqlite:///{db.target}", poolclass=NullPool)
    return sa.create_engine(db.target.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=NullPool,
                            connect_args={"connect_timeout": 10})
