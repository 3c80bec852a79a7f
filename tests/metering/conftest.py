"""Ledger databases for the metering tests: a fresh SQLite file, or a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import pg_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards; FAILS (not skips) when unreachable."""
    with pg_database() as url:
        yield url
