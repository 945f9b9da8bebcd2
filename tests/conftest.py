"""Shared fixtures. Every test has a timeout (pyproject: timeout = 60)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from podindex.store.base import Store, open_store
from tests.pg import postgres_url

StoreFactory = Callable[[], str]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a new, empty history store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/history.db"
    return postgres_url(request)


@pytest.fixture(params=["inline", "writer-process"])
async def store(store_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The store at ``store_url``; its writes in this process, or in a child (as served)."""
    opened = open_store(store_url, writer_process=request.param == "writer-process")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
