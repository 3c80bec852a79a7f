"""The per-instance journal of requests metered in memory: written before anything reaches a client.

A gateway instance that admits requests against its leases (:mod:`sovcloud.metering.lease`) records each
step here before acting on it: the reservation (``R``), each progress mark of a stream (``P``), the
settlement (``S``) or the release (``X``). A record is one JSON line copied into a segment file mapped
into memory (``mmap``, ``MAP_SHARED``): the copy is the write, with no system call, so the event loop
never gives up the GIL for it (a ``write()`` did, and then waited for the ledger's writer thread: 20 us
per record under load instead of 1). The mapped pages belong to the operating system's page cache, so a
record survives ``kill -9`` of the process, like a commit of the SQLite ledger in its default
``synchronous=NORMAL``. With ``fsync=True`` every record is also ``msync``-ed, which survives an OS crash
or power loss at the cost of a disk flush per record. A segment is a file of ``segment_bytes``, allocated
when it is started (a full disk fails there, with a LedgerError, rather than in a copy); unused space reads
as zero bytes, where reading stops.

The database is written behind (charges in batches); a record is *outstanding* until the database holds
its request's outcome. The journal is cut into segments; segments are deleted oldest first, and only
when neither they nor any older segment hold an outstanding record, so a request's later records are
never kept while its earlier ones are gone. After a crash, :meth:`Journal.read` returns every record
left and :mod:`sovcloud.metering.recovery` replays them into the database (idempotently) before serving.

One instance id, one directory: an exclusive ``flock`` on ``LOCK`` refuses a second process that
would share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from sovcloud.errors import LedgerError, LedgerValueError

__all__ = ["Journal"]

_PREFIX, _SUFFIX = "seg-", ".jsonl"


class Journal:
    """Append-only JSON-lines journal in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, *, segment_bytes: int = 16 << 20, fsync: bool = False) -> None:
        if segment_bytes < mmap.PAGESIZE:
            raise LedgerValueError(f"segment_bytes must be >= {mmap.PAGESIZE} (got {segment_bytes})")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock_fd = -1
        self._map: mmap.mmap | None = None
        self._seg = 0  # current segment number
        self._size = 0
        self._outstanding: dict[int, int] = {}  # segment -> outstanding records
        self._old: list[int] = []  # segments found at open (a crashed run's), read by recovery

    # ---- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Lock the directory, note the segments a previous run left, start a new segment."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(f"cannot open the ledger journal {self.directory}: {exc}; check the path and its "
                              "permissions or set another ledger_journal") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise LedgerError(f"the ledger journal {self.directory} is in use by another process; give each "
                              "gateway instance its own instance_id (or ledger_journal)") from exc
        self._old = sorted(self._segments())
        self._seg = (self._old[-1] + 1) if self._old else 1
        self._start_segment()

    def close(self) -> None:
        """Close the current segment (deleted when nothing in any segment is outstanding) and unlock."""
        self._close_segment()
        if not any(self._outstanding.values()) and not self._old:
            for seg in list(self._outstanding):
                self._unlink(seg)
            self._outstanding.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _segments(self) -> list[int]:
        out = []
        for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            with contextlib.suppress(ValueError):
                out.append(int(p.name[len(_PREFIX):-len(_SUFFIX)]))
        return out

    def _path(self, seg: int) -> Path:
        return self.directory / f"{_PREFIX}{seg:010d}{_SUFFIX}"

    def _start_segment(self) -> None:
        try:
            fd = os.open(self._path(self._seg), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.segment_bytes)  # blocks now: a full disk fails here, not in a write
                self._map = mmap.mmap(fd, self.segment_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            raise LedgerError(f"cannot write the ledger journal {self.directory}: {exc}") from exc
        self._size = 0
        self._outstanding[self._seg] = 0

    def _close_segment(self) -> None:
        """Unmap the current segment. No flush: its pages are the file's page cache, which a crashed process
        cannot lose, and with ``fsync`` every record was flushed when written (a 16 MB flush here stalled
        the event loop for 12 ms at every rotation)."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def _unlink(self, seg: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(seg).unlink()

    # ---- records ---------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> int:
        """Write ``record`` as one line; returns its segment, outstanding until :meth:`done` is called for
        it. Raises LedgerError when the write fails (then nothing may be delivered for it)."""
        line = orjson.dumps(record) + b"\n"
        n = len(line)
        if self._size + n > self.segment_bytes:  # this segment is full: the next one
            if n > self.segment_bytes:
                raise LedgerError(f"journal record of {n} bytes exceeds the segment size {self.segment_bytes}")
            self._close_segment()
            self._seg += 1
            self._start_segment()
        m = self._map
        if m is None:
            raise LedgerError("the ledger journal is not open")
        start = self._size
        m[start:start + n] = line
        if self.fsync:
            try:
                m.flush(start - start % mmap.PAGESIZE, n + start % mmap.PAGESIZE)
            except OSError as exc:
                raise LedgerError(f"cannot write the ledger journal {self.directory}: {exc}") from exc
        self._size = start + n
        seg = self._seg
        self._outstanding[seg] += 1
        return seg

    def done(self, segments: list[int]) -> None:
        """The records written to ``segments`` (one entry per record) are no longer outstanding."""
        for seg in segments:
            self._outstanding[seg] -= 1
        self._trim()

    def _trim(self) -> None:
        """Delete the oldest segments while they are complete and hold nothing outstanding."""
        if self._old:
            return  # a crashed run's segments come first; recovery removes them
        for seg in sorted(self._outstanding):
            if seg == self._seg or self._outstanding[seg]:
                break
            del self._outstanding[seg]
            self._unlink(seg)

    @property
    def outstanding(self) -> int:
        return sum(self._outstanding.values())

    def read(self) -> Iterator[dict[str, Any]]:
        """Every record the segments of a previous run hold, oldest first (a torn last line is skipped)."""
        for seg in self._old:
            data = self._path(seg).read_bytes()
            end = data.find(b"\x00")
            for line in (data if end < 0 else data[:end]).split(b"\n"):
                if not line:
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:  # a write cut short by a crash: never acted upon
                    continue
                if isinstance(rec, dict):
                    yield rec

    def forget_old(self) -> None:
        """Delete the previous run's segments (after recovery put their outcomes in the database)."""
        for seg in self._old:
            self._unlink(seg)
        self._old = []
        self._trim()
