"""The OpenAI Batch API over uploaded JSONL files: deferred work, run through the gateway's own request path.

A batch (``POST /v1/batches`` with ``input_file_id``, ``endpoint``, ``completion_window: "24h"``) names a file
of request lines ``{"custom_id", "method": "POST", "url": <endpoint>, "body": {...}}``. The file is checked
whole first (JSON per line, unique custom ids, the batch's endpoint, no streaming, at most
``batch.max_lines``): any problem fails the batch with the line numbers, before anything runs. Then its lines
run as deferred work (:mod:`sovcloud.gateway.deferral`: spare slots only, interactive traffic first), at most
``batch.concurrency`` at a time, each through the full request path of the tenant (residency, rate limits,
reservation and settlement in the ledger: every line is metered like any request). A line refused for load,
health, metering or a rate limit (429, or 503 ``saturated``/``unhealthy``/``batch_deferred_timeout``/
``ledger_unavailable``) waits and tries again until the deadline; any other answer (a residency refusal
included) is final. Each line runs as the tenant is known at that moment (a removed tenant's lines fail).

Results: each line gets one output line ``{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error": null}``, 2xx in the output file, other statuses in the error file; a line not run by
``expires_at`` (created + 24 h) gets ``"error": {"code": "batch_expired"}`` in the error file and the batch
ends ``expired``; a cancelled batch runs no new line. Lines are appended as they finish, so a gateway that
stops resumes its batches at the next start (:meth:`BatchRunner.resume`) without running a finished line
again. Statuses: validating -> in_progress -> finalizing -> completed (or failed, expired, cancelling ->
cancelled), with their timestamps and ``request_counts`` {total, completed, failed}.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from sovcloud.errors import ApiError
from sovcloud.gateway.files import FileStore, tenant_dir, write_durably
from sovcloud.metering.tenants import Tenant

__all__ = ["ENDPOINTS", "BatchRunner", "LineRunner", "check_lines"]

#: endpoints a batch may target
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: (status, body, request id) of one line run through the gateway
LineRunner = Callable[[Tenant, dict[str, Any], str], Awaitable[tuple[int, bytes, str, float]]]
#: refusals a line waits out and tries again (load, health, metering); any other answer is final
RETRY_CODES = frozenset({"rate_limit_exceeded", "saturated", "unhealthy", "batch_deferred_timeout",
                         "ledger_unavailable"})
_BATCH_ID = re.compile(r"^batch_[0-9a-f]{24}$")
log = logging.getLogger("sovcloud.gateway")


def check_lines(data: bytes, endpoint: str, max_lines: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(request lines, errors) of a batch input file: errors are OpenAI's ``{code, message, line}`` entries."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            errors.append({"code": "invalid_json_line", "message": f"not valid JSON ({exc})", "line": n})
            continue
        problem = _line_problem(item, endpoint, seen)
        if problem:
            errors.append({"code": "invalid_request", "message": problem, "line": n})
            continue
        seen.add(item["custom_id"])
        lines.append(item)
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "the input file has no request lines", "line": None})
    if len(lines) > max_lines:
        errors.append({"code": "too_many_requests", "line": None,
                       "message": f"{len(lines):,} requests; a batch holds at most {max_lines:,} (batch.max_lines)"})
    return lines, errors


def _line_problem(item: Any, endpoint: str, seen: set[str]) -> str | None:
    if not isinstance(item, dict):
        return "each line must be a JSON object with custom_id, method, url and body"
    cid = item.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return "custom_id must be a non-empty string"
    if cid in seen:
        return f"custom_id '{cid}' is used by an earlier line; custom ids must be unique"
    if item.get("method") != "POST":
        return f"method must be POST (got {item.get('method')!r})"
    if item.get("url") != endpoint:
        return f"url must be the batch's endpoint {endpoint} (got {item.get('url')!r})"
    body = item.get("body")
    if not isinstance(body, dict):
        return "body must be a JSON object (the request)"
    if body.get("stream"):
        return "stream is not supported in a batch; remove it"
    return None


class BatchRunner:
    """The batches of one gateway: their state on disk and the tasks that run them (module docstring)."""

    def __init__(self, files: FileStore, run_line: LineRunner, tenants: Callable[[str], Tenant | None], *,
                 concurrency: int, max_lines: int, clock: Callable[[], float] = time.time,
                 retry_s: float = 1.0) -> None:
        self.files, self.run_line, self.tenants = files, run_line, tenants
        self.concurrency, self.max_lines, self.clock, self.retry_s = concurrency, max_lines, clock, retry_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()  # batches asked to stop: their lines check this, not the disk

    # ---- the state on disk -----------------------------------------------------------------------
    def _dir(self, tenant: str) -> Path:
        return self.files.folder / tenant_dir(tenant) / "batches"

    def _save(self, tenant: str, batch: dict[str, Any]) -> None:
        d = self._dir(tenant)
        d.mkdir(parents=True, exist_ok=True)
        write_durably(d / f"{batch['id']}.json", orjson.dumps(batch))

    def get(self, tenant: str, batch_id: str) -> dict[str, Any]:
        path = self._dir(tenant) / f"{batch_id}.json"
        if not _BATCH_ID.match(batch_id) or not path.exists():
            raise ApiError(404, f"No such Batch object: {batch_id}", param="batch_id", code="batch_not_found")
        out: dict[str, Any] = orjson.loads(path.read_bytes())
        return out

    def list(self, tenant: str) -> list[dict[str, Any]]:
        d = self._dir(tenant)
        found = [orjson.loads(p.read_bytes()) for p in d.glob("batch_*.json")] if d.exists() else []
        return sorted(found, key=lambda b: (-b["created_at"], b["id"]))

    # ---- the API ---------------------------------------------------------------------------------
    def create(self, tenant: Tenant, input_file_id: str, endpoint: str, window: str,
               metadata: dict[str, str] | None) -> dict[str, Any]:
        """A new batch of ``input_file_id``'s lines (checked now; failed at once when a line is wrong)."""
        if endpoint not in ENDPOINTS:
            raise ApiError(400, f"endpoint '{endpoint}' cannot be batched; use one of {', '.join(ENDPOINTS)}.",
                           param="endpoint", code="invalid_endpoint")
        if window != "24h":
            raise ApiError(400, f"completion_window '{window}' is not supported; use '24h'.",
                           param="completion_window", code="invalid_completion_window")
        stored = self.files.get(tenant.id, input_file_id)
        if stored.purpose != "batch":
            raise ApiError(400, f"File {input_file_id} has purpose '{stored.purpose}'; upload batch input with "
                                "purpose 'batch'.", param="input_file_id", code="invalid_input_file")
        now = int(self.clock())
        lines, errors = check_lines(self.files.content(tenant.id, input_file_id), endpoint, self.max_lines)
        batch: dict[str, Any] = {
            "id": "batch_" + secrets.token_hex(12), "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": input_file_id, "completion_window": window, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": metadata or None,
            "tenant": tenant.id}
        if errors:
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors[:100]})
            self._save(tenant.id, batch)
            return _public(batch)
        batch.update(status="in_progress", in_progress_at=now)
        self._save(tenant.id, batch)
        self._start(tenant, batch)
        return _public(batch)

    def cancel(self, tenant: Tenant, batch_id: str) -> dict[str, Any]:
        batch = self.get(tenant.id, batch_id)
        if batch["status"] in ("validating", "in_progress"):
            batch.update(status="cancelling", cancelling_at=int(self.clock()))
            self._save(tenant.id, batch)
            self._cancelling.add(batch_id)
        return _public(batch)

    async def resume(self) -> int:
        """Start again every batch a stopped gateway left unfinished; returns how many."""
        n = 0
        for folder in self.files.folder.glob("*/batches"):
            for path in folder.glob("batch_*.json"):
                batch = orjson.loads(path.read_bytes())
                tenant = self.tenants(batch["tenant"])
                if batch["status"] in ("in_progress", "finalizing", "cancelling") and tenant is not None:
                    if batch["status"] == "cancelling":
                        self._cancelling.add(batch["id"])
                    self._start(tenant, batch)
                    n += 1
        return n

    async def close(self) -> None:
        """Stop the running batches (their finished lines are on disk; :meth:`resume` goes on)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def wait(self, batch_id: str) -> None:
        """Until the batch's task ends (tests)."""
        task = self._tasks.get(batch_id)
        if task is not None:
            await task

    # ---- running ---------------------------------------------------------------------------------
    def _start(self, tenant: Tenant, batch: dict[str, Any]) -> None:
        batch_id = str(batch["id"])
        if batch_id in self._tasks:  # already running: never twice
            return
        task = asyncio.get_running_loop().create_task(self._run(tenant, batch_id))
        self._tasks[batch_id] = task
        task.add_done_callback(functools.partial(self._done, batch_id))

    def _done(self, batch_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(batch_id) is task:
            del self._tasks[batch_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("batch failed", extra={"fields": {"batch": batch_id, "error": repr(task.exception())}})

    async def _run(self, tenant: Tenant, batch_id: str) -> None:
        try:
            await self._lines(tenant, batch_id)
        except (OSError, ApiError, ValueError) as exc:  # e.g. the input file deleted, the disk full
            batch = self.get(tenant.id, batch_id)
            batch.update(status="failed", failed_at=int(self.clock()), errors={"object": "list", "data": [
                {"code": "batch_failed", "message": f"the batch could not go on: {exc}", "line": None}]})
            self._save(tenant.id, batch)
            log.error("batch failed", extra={"fields": {"batch": batch_id, "error": str(exc)}})

    async def _lines(self, tenant: Tenant, batch_id: str) -> None:
        batch = self.get(tenant.id, batch_id)
        lines, _ = check_lines(self.files.content(tenant.id, batch["input_file_id"]), batch["endpoint"],
                               self.max_lines)
        d = self._dir(tenant.id)
        out_path, err_path = d / f"{batch_id}.output.jsonl", d / f"{batch_id}.errors.jsonl"
        done = _custom_ids(out_path) | _custom_ids(err_path)  # finished before a stop: not run again
        todo = [line for line in lines if line["custom_id"] not in done]
        gate = asyncio.Semaphore(self.concurrency)
        with open(out_path, "ab") as out, open(err_path, "ab") as err:
            async def one(line: dict[str, Any]) -> None:
                async with gate:
                    if batch_id in self._cancelling:
                        return
                    record, ok = await self._line(tenant, batch, line)
                    if record is None:
                        return
                    (out if ok else err).write(orjson.dumps(record) + b"\n")
                    (out if ok else err).flush()

            await asyncio.gather(*(one(line) for line in todo))
        self._finish(tenant, batch_id, out_path, err_path, len(lines))

    async def _line(self, tenant: Tenant, batch: dict[str, Any], line: dict[str, Any]) -> tuple[
            dict[str, Any] | None, bool]:
        """Run one line until a final answer or the deadline; (output record or None if cancelled, is it 2xx)."""
        rid = "batch_req_" + secrets.token_hex(12)
        while True:
            if self.clock() >= batch["expires_at"]:
                return {"id": rid, "custom_id": line["custom_id"], "response": None,
                        "error": {"code": "batch_expired", "message": "This request could not be executed before "
                                  "the completion window expired."}}, False
            now = self.tenants(tenant.id)  # the tenant as the store knows it now (policy, removal)
            if now is None:
                return {"id": rid, "custom_id": line["custom_id"], "response": None,
                        "error": {"code": "tenant_unknown", "message": f"tenant '{tenant.id}' is no longer known"}}, \
                    False
            status, body, request_id, wait_s = await self.run_line(now, line["body"], batch["endpoint"])
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = {"raw": body.decode("utf-8", "replace")}
            err = parsed.get("error") if isinstance(parsed, dict) else None
            code = err.get("code") if isinstance(err, dict) else None
            if not (status in (429, 503) and code in RETRY_CODES):
                return {"id": rid, "custom_id": line["custom_id"], "error": None,
                        "response": {"status_code": status, "request_id": request_id, "body": parsed}}, \
                    200 <= status < 300
            if batch["id"] in self._cancelling:
                return None, False
            await asyncio.sleep(max(wait_s, self.retry_s))

    def _finish(self, tenant: Tenant, batch_id: str, out_path: Path, err_path: Path, total: int) -> None:
        batch = self.get(tenant.id, batch_id)
        now = int(self.clock())
        outputs, errors = out_path.read_bytes(), err_path.read_bytes()
        expired = sum(1 for raw in errors.splitlines() if (orjson.loads(raw).get("error") or {}).get("code")
                      == "batch_expired")
        completed, failed = outputs.count(b"\n"), errors.count(b"\n")
        batch["finalizing_at"] = batch["finalizing_at"] or now
        if outputs:
            batch["output_file_id"] = self.files.put(tenant.id, outputs, f"{batch_id}_output.jsonl",
                                                     "batch_output").id
        if errors:
            batch["error_file_id"] = self.files.put(tenant.id, errors, f"{batch_id}_error.jsonl", "batch_output").id
        batch["request_counts"] = {"total": total, "completed": completed, "failed": failed}
        if batch["status"] == "cancelling":
            batch.update(status="cancelled", cancelled_at=now)
            self._cancelling.discard(batch_id)
        elif expired:
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", completed_at=now)
        self._save(tenant.id, batch)
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
        log.info("batch finished", extra={"fields": {"batch": batch_id, "tenant": tenant.id,
                                                     "status": batch["status"], "completed": completed,
                                                     "failed": failed, "deadline_missed": expired}})


def _custom_ids(path: Path) -> set[str]:
    """Custom ids of the whole lines of a results file; a torn last line (a stop mid-write) is cut off, so its
    request runs again."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    whole = data[:data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(len(whole))
    return {orjson.loads(raw)["custom_id"] for raw in whole.splitlines() if raw.strip()}


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "tenant"}
