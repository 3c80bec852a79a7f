"""The metering ledger: reserve the worst case at admission, settle the actual usage, never lose a charge.

Design (math of the balances in :mod:`sovcloud.metering.book` and :mod:`sovcloud.metering.pricing`, the
audit in :mod:`sovcloud.metering.audit`, database details in :mod:`sovcloud.metering.db`):

* **Group commit.** ``reserve``/``progress``/``settle``/``release`` put an operation on a queue and await
  a future. One writer thread per :class:`Ledger` takes everything queued (up to ``max_batch``), applies
  it in one transaction (:class:`~sovcloud.metering.book.Batch`: a handful of statements per batch, not per
  request) and resolves the batch's futures with one ``call_soon_threadsafe``. Batches form by
  themselves: while one commits, the next accumulates, so there is no timer and no added latency at low
  load. The event loop only creates a future and enqueues (a few microseconds per operation).
* **Durable before answered.** A future resolves only after its transaction committed: a reservation
  the gateway acts on, a progress mark and a settlement are in the database. Balances are authoritative
  in the database and every decision is made on locked rows, so several gateway instances sharing one
  PostgreSQL never overspend. A failed batch is rolled back and retried (every operation is idempotent
  by reservation id, so an ambiguous commit is safe to retry); if it keeps failing, its operations fail
  with :class:`~sovcloud.errors.LedgerError` (admission refused; an unsettled reservation stays pending
  and is charged by :meth:`Ledger.recover`).
* **Streaming progress and the crash bound.** Before forwarding a chunk that brings the delivered
  completion tokens to ``n``, the gateway awaits ``progress(reservation, n)``. If ``n`` exceeds the durable
  mark, the ledger records ``m = min(max_tokens, n + B - 1)`` (at least ``n``) and the call returns once
  it is committed; otherwise it returns at once. ``B`` is ``progress_block`` (default 32), so a stream
  waits for a commit once per ``B`` tokens. Hence at every instant ``delivered <= m < n_last + B``. After
  a crash (``kill -9``), :meth:`Ledger.recover` settles each pending reservation of the instance at
  ``prompt_tokens + m`` (``m`` capped at ``max_tokens``), or releases it when ``m = 0`` (nothing was
  delivered). So the recovered completion charge ``C`` satisfies ``delivered <= C <= delivered + B``
  for one-token chunks (``+ chunk - 1`` for larger chunks), and never more than the reservation. A
  non-streamed response is settled before its body is sent. A request that was settled is never charged
  again (settle is idempotent; recovery only touches pending reservations).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sovcloud.errors import LedgerError, LedgerValueError
from sovcloud.metering.audit import AuditResult, Balance, read_audit, read_balance
from sovcloud.metering.book import Batch
from sovcloud.metering.db import LedgerDB, default_ledger_url, ledger_metadata, redact_url
from sovcloud.metering.pricing import price_pico
from sovcloud.metering.records import Op, Reservation, Settlement
from sovcloud.metering.tenants import Tenant

__all__ = ["AuditResult", "Balance", "Ledger", "LedgerStats", "Reservation", "Settlement", "check_tokens",
           "default_ledger_url", "tenant_prices"]

_RETRIES = 6
_STOP = "stop"


@dataclass
class LedgerStats:
    """Counters of the writer (for metrics): batches and operations committed, retries, failures."""

    batches: int = 0
    ops: int = 0
    largest_batch: int = 0
    retries: int = 0
    failed_ops: int = 0


class _Mark:
    __slots__ = ("durable", "future", "pending")

    def __init__(self) -> None:
        self.durable = 0
        self.pending = 0
        self.future: asyncio.Future[Any] | None = None


def _to_epoch(when: datetime) -> float:
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


class Ledger:
    """Reservations, settlements, grants and credits of every tenant (see the module docstring)."""

    premark = True  # a progress mark is a commit: the gateway marks the first block while the upstream prefills

    def __init__(self, db: LedgerDB, *, instance_id: str | None = None, progress_block: int = 32,
                 max_batch: int = 512, writer_nice: int = 0) -> None:
        if progress_block < 1 or max_batch < 1:
            raise LedgerValueError("progress_block and max_batch must be >= 1")
        self._db = db
        self.instance_id = instance_id
        self.progress_block = progress_block
        self._max_batch = max_batch
        self._writer_nice = writer_nice
        self._queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._marks: dict[str, _Mark] = {}
        self.stats = LedgerStats()
        self.clock: Callable[[], float] = time.time  # unix seconds; the batches' "now" (grant expiry)
        self._id_salt = os.urandom(8).hex()
        self._id_seq = itertools.count()

    @classmethod
    def open(cls, url: str, *, instance_id: str | None = None, progress_block: int = 32,
             max_batch: int = 512, writer_nice: int = 0) -> Ledger:
        """Open the ledger at ``url`` (creating its tables if absent). ``instance_id`` names this gateway
        instance when several share one database (recovery then touches only its own reservations).
        ``writer_nice`` > 0 lowers the writer thread's CPU priority by that much (Linux; for a writer nobody
        waits on, such as the leased ledger's write-behind)."""
        db = LedgerDB.parse(url)
        db.create_schema(ledger_metadata, version_key="schema_version")
        return cls(db, instance_id=instance_id, progress_block=progress_block, max_batch=max_batch,
                   writer_nice=writer_nice)

    @property
    def url(self) -> str:
        return redact_url(self._db.url)

    # ---- writer lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer thread (connects; raises LedgerError when the database is unreachable)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._closing = False
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sovcloud-ledger", daemon=True)
        self._thread.start()
        try:
            await ready
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    async def close(self) -> None:
        """Commit everything queued, then stop the writer and close its connection."""
        if self._thread is None or self._loop is None:
            return
        self._closing = True
        done: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(Op(_STOP, "", "", future=done))
        await done
        self._thread.join()
        self._thread = None

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover - start() sets it
            return
        _lower_priority(self._writer_nice)
        try:
            conn: Any = self._db.connect()
        except LedgerError as exc:
            loop.call_soon_threadsafe(_resolve, ready, exc)
            return
        loop.call_soon_threadsafe(_resolve, ready, None)
        stop: Op | None = None
        while True:
            try:  # once stopping, linger 50 ms for releases queued by the last deliveries
                ops = [self._queue.get(timeout=0.05 if stop is not None else None)]
            except queue.Empty:
                break
            while len(ops) < self._max_batch:
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for op in ops:
                if op.kind == _STOP:
                    stop = op
            work = [op for op in ops if op.kind != _STOP]
            if work:
                conn, results = self._commit(conn, work)
                try:
                    loop.call_soon_threadsafe(self._deliver, work, results)
                except RuntimeError:  # the event loop was closed without `await ledger.close()`
                    break
        with contextlib.suppress(*self._db.db_errors):
            if conn is not None:
                conn.close()
        if stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, stop.future, None)

    def _commit(self, conn: Any, ops: list[Op]) -> tuple[Any, list[Any]]:
        """Apply ``ops`` in one transaction, retrying (and reconnecting) on database errors."""
        db = self._db
        last: BaseException | None = None
        for attempt in range(_RETRIES):
            try:
                if conn is None:
                    conn = db.connect()
                results = Batch(db, conn, ops, check_new=attempt > 0, now=self.clock()).run()
            except LedgerError as exc:  # reconnect failed
                last, conn = exc, None
            except db.db_errors as exc:
                last = exc
                db.rollback(conn)
                if db.is_disconnect(exc, conn):
                    with contextlib.suppress(*db.db_errors):
                        conn.close()
                    conn = None
            except Exception as exc:  # a bug: fail these operations, keep the writer alive
                db.rollback(conn)
                self.stats.failed_ops += len(ops)
                return conn, [LedgerError(f"ledger internal error: {exc!r}") for _ in ops]
            else:
                st = self.stats
                st.batches += 1
                st.ops += len(ops)
                st.largest_batch = max(st.largest_batch, len(ops))
                return conn, results
            self.stats.retries += 1
            time.sleep(min(1.0, 0.01 * 2 ** attempt))
        self.stats.failed_ops += len(ops)
        msg = f"ledger database {redact_url(db.url)} failed {_RETRIES} times: {last}"
        return conn, [LedgerError(msg) for _ in ops]  # one instance per awaiting task

    def _deliver(self, ops: list[Op], results: list[Any]) -> None:
        for op, res in zip(ops, results, strict=True):
            if op.kind == "progress" and not isinstance(res, BaseException):
                mark = self._marks.get(op.rid)
                if mark is not None:
                    mark.durable = max(mark.durable, op.a)
                    if mark.future is op.future:
                        mark.future = None
            fut = op.future
            if fut is None:
                continue
            if fut.done():  # the caller was cancelled
                if op.kind == "reserve" and isinstance(res, Reservation):
                    self._queue.put(Op("release", res.id, res.tenant_id))  # nothing can have been delivered
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op`` for the writer; the future resolves once its transaction committed (or failed)."""
        if self._thread is None or self._loop is None or self._closing:
            raise LedgerError("the ledger writer is not running; call `await ledger.start()` first")
        op.future = fut = self._loop.create_future()
        self._queue.put(op)
        return fut

    def new_id(self) -> str:
        """A new reservation id: time first (inserts append to the B-tree), then 64 random bits drawn once
        per instance and a counter, so the hot path makes no system call for randomness."""
        return f"{time.time_ns():016x}{self._id_salt}{next(self._id_seq):x}"

    def apply(self, ops: list[Op]) -> list[Any]:
        """Apply ``ops`` synchronously on an own connection (start-up and recovery), in batches."""
        conn = None
        out: list[Any] = []
        try:
            for start in range(0, len(ops), self._max_batch):
                conn, results = self._commit(conn, ops[start:start + self._max_batch])
                out.extend(results)
        finally:
            if conn is not None:
                with contextlib.suppress(*self._db.db_errors):
                    conn.close()
        return out

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only query (``?`` placeholders) on an own connection."""
        with self._connection() as conn:
            return [tuple(r) for r in conn.execute(self._db.sql(sql), params).fetchall()]

    # ---- the hot path --------------------------------------------------------------------------
    async def reserve(self, tenant: Tenant, request_id: str, model: str, prompt_tokens: int,
                      max_tokens: int) -> Reservation:
        """Hold the worst case (prompt + max_tokens) from grants, then credits; InsufficientFunds if short."""
        check_tokens(prompt_tokens, max_tokens)
        pin, pout = tenant_prices(tenant, model)
        op = Op("reserve", self.new_id(), tenant.id, prompt_tokens, max_tokens, model, request_id, pin, pout,
                self.instance_id or "")
        res: Reservation = await self.submit(op)
        return res

    async def progress(self, reservation: Reservation, completion_tokens: int) -> None:
        """Make ``completion_tokens`` delivered tokens durable before they are forwarded (see the module doc)."""
        if completion_tokens <= 0:
            return
        mark = self._marks.get(reservation.id)
        if mark is None:
            mark = self._marks[reservation.id] = _Mark()
        elif completion_tokens <= mark.durable:
            return
        elif mark.future is not None and completion_tokens <= mark.pending:
            await asyncio.shield(mark.future)
            return
        target = max(completion_tokens, min(reservation.max_tokens, completion_tokens + self.progress_block - 1))
        fut = self.submit(Op("progress", reservation.id, reservation.tenant_id, target))
        mark.pending, mark.future = target, fut
        await asyncio.shield(fut)

    async def settle(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int) -> Settlement:
        """Charge the actual usage and release the rest; a second settle returns the first."""
        if prompt_tokens < 0 or completion_tokens < 0:
            raise LedgerValueError(f"token counts must be >= 0 (got {prompt_tokens}, {completion_tokens})")
        fut = self.submit(Op("settle", reservation.id, reservation.tenant_id, prompt_tokens, completion_tokens))
        self._marks.pop(reservation.id, None)
        res: Settlement = await fut
        return res

    async def release(self, reservation: Reservation) -> None:
        """Return the whole reservation: nothing was delivered (no charge). No-op once settled."""
        fut = self.submit(Op("release", reservation.id, reservation.tenant_id))
        self._marks.pop(reservation.id, None)
        await fut

    # ---- start-up, admin and reading (synchronous, own connection) ----------------------------------
    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        conn = self._db.connect()
        try:
            yield conn
        except self._db.db_errors as exc:
            raise LedgerError(f"ledger database {redact_url(self._db.url)}: {exc}") from exc
        finally:
            with contextlib.suppress(*self._db.db_errors):
                conn.close()

    def recover(self) -> int:
        """Settle (at the durable progress mark) or release every reservation left pending by a crashed
        instance: this ``instance_id``'s, or all when it is None. Returns how many were recovered."""
        db = self._db
        with self._connection() as conn:
            if self.instance_id is None:
                rows = conn.execute("SELECT id, tenant_id FROM ledger_reservations WHERE state=0").fetchall()
            else:
                rows = conn.execute(db.sql("SELECT id, tenant_id FROM ledger_reservations WHERE state=0 AND "
                                           "instance_id=?"), (self.instance_id,)).fetchall()
        for res in self.apply([Op("recover", rid, tenant) for rid, tenant in rows]):
            if isinstance(res, BaseException):
                raise res
        return len(rows)

    def _admin(self, tenant_id: str, sql: str, params: tuple[Any, ...],
               entry: tuple[str, int, int, int | None]) -> None:
        db = self._db
        with self._connection() as conn:
            db.begin(conn)
            try:
                conn.execute(db.sql("INSERT INTO ledger_accounts (tenant_id, credited, credit_available, "
                                    "credit_reserved, credit_spent, unbilled_tokens) VALUES (?,0,0,0,0,0) "
                                    "ON CONFLICT (tenant_id) DO NOTHING"), (tenant_id,))
                conn.execute(db.sql("SELECT tenant_id FROM ledger_accounts WHERE tenant_id=?") + db.for_update,
                             (tenant_id,)).fetchall()
                row = conn.execute(db.sql(sql), params).fetchone()
                kind, tokens, micro, expires = entry
                conn.execute(db.sql("INSERT INTO ledger_entries (tenant_id, kind, tokens, micro, grant_id, expires_at, "
                                    "created_at) VALUES (?,?,?,?,?,?,?)"),
                             (tenant_id, kind, tokens, micro, row[0] if row else None, expires, time.time()))
                db.commit(conn)
            except BaseException:
                db.rollback(conn)
                raise

    def grant(self, tenant_id: str, tokens: int, expires: datetime | None) -> None:
        """Give ``tenant_id`` free tokens (prompt and completion alike), optionally expiring (naive = UTC)."""
        if tokens <= 0:
            raise LedgerValueError(f"a grant must be a positive number of tokens (got {tokens})")
        exp = None if expires is None else int(_to_epoch(expires))
        if exp is not None and exp <= time.time():
            raise LedgerValueError(f"grant expiry {expires} is in the past")
        self._admin(tenant_id, "INSERT INTO ledger_grants (tenant_id, granted, available, reserved, spent, expires_at, "
                    "created_at) VALUES (?,?,?,0,0,?,?) RETURNING id", (tenant_id, tokens, tokens, exp, time.time()),
                    ("grant", tokens, 0, exp))

    def credit(self, tenant_id: str, usd: float) -> None:
        """Add ``usd`` US$ of credit (stored as integer micro-dollars)."""
        micro = round(usd * 1_000_000) if math.isfinite(usd) else 0
        if micro <= 0:
            raise LedgerValueError(f"a credit must be a positive amount of US$ (got {usd})")
        self._admin(tenant_id, "UPDATE ledger_accounts SET credited = credited + ?, credit_available = "
                    "credit_available + ? WHERE tenant_id=? RETURNING NULL", (micro, micro, tenant_id),
                    ("credit", 0, micro, None))

    def balance(self, tenant_id: str, now: datetime | None = None) -> Balance:
        """Grants remaining (non-expired at ``now``), credits, reserved and spent tokens and US$."""
        at = time.time() if now is None else _to_epoch(now)
        with self._connection() as conn:
            return read_balance(self._db, conn, tenant_id, at)

    def audit(self, tenant_id: str | None = None) -> AuditResult:
        """Independent check that grants + credits = remaining + reserved + spent, to the token/micro-dollar."""
        with self._connection() as conn:
            return read_audit(self._db, conn, tenant_id)


def check_tokens(prompt_tokens: int, max_tokens: int) -> None:
    if prompt_tokens < 0 or max_tokens < 0:
        raise LedgerValueError(f"token counts must be >= 0 (got prompt {prompt_tokens}, max_tokens {max_tokens})")


def tenant_prices(tenant: Tenant, model: str) -> tuple[int, int]:
    """The tenant's (input, output) price of ``model`` in pico-US$ per token; (-1, -1) when it has none."""
    price = tenant.prices.get(model) or tenant.prices.get("*")
    return (price_pico(price.input_usd_per_mtok), price_pico(price.output_usd_per_mtok)) if price else (-1, -1)


def _resolve(fut: asyncio.Future[Any] | None, value: Any) -> None:
    if fut is None or fut.done():
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux, where it is per thread; elsewhere the same
    call would change the whole process, so nothing is done). Raising it needs no privilege."""
    if nice <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
