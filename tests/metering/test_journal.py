"""The per-instance journal: records survive the process, segments rotate and are trimmed oldest first."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from sovcloud.errors import LedgerError
from sovcloud.metering.journal import Journal


def _segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("seg-*"))


def test_records_rotate_and_trim_oldest_first_only(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=mmap.PAGESIZE)
    j.open()
    first = [j.append({"k": "R", "id": f"a{i}", "pad": "x" * 100}) for i in range(60)]  # ~7 KB: two segments
    assert first[0] == 1 and first[-1] == 2 and len(_segments(tmp_path)) == 2
    j.done(first[30:])  # the newer records are done, the oldest are not: nothing can be deleted
    assert len(_segments(tmp_path)) == 2
    j.done(first[:30])
    assert len(_segments(tmp_path)) == 1  # segment 1 gone; the current one stays open
    assert j.outstanding == 0
    j.close()
    assert _segments(tmp_path) == []  # nothing outstanding: nothing left behind


def test_a_crashed_run_s_records_are_read_back_and_a_torn_tail_is_skipped(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    for i in range(3):
        j.append({"k": "P", "id": "r", "n": i})
    m = j._map  # simulate a crash in the middle of copying a record: its bytes stop short of the newline
    assert m is not None
    m[j._size:j._size + 9] = b'{"k":"S",'
    j._close_segment()
    j._lock_fd, fd = -1, j._lock_fd  # the process "died" holding the lock; the kernel releases it
    os.close(fd)
    again = Journal(tmp_path)
    again.open()
    assert [r["n"] for r in again.read()] == [0, 1, 2]
    again.forget_old()
    assert [r for r in again.read()] == []
    again.close()
    assert _segments(tmp_path) == []


def test_one_process_per_journal_and_clear_errors(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    with pytest.raises(LedgerError, match="in use by another process"):
        Journal(tmp_path).open()
    with pytest.raises(LedgerError, match="exceeds the segment size"):
        j.append({"x": "y" * (17 << 20)})
    j.close()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="cannot open the ledger journal"):
        Journal(blocker / "sub").open()
    with pytest.raises(ValueError, match="segment_bytes"):
        Journal(tmp_path, segment_bytes=10)
