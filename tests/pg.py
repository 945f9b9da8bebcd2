"""A fresh PostgreSQL database per test, on the server this machine runs.

The server is ``$PODINDEX_TEST_POSTGRES`` (a URL of a database to run
``CREATE DATABASE`` from), else the local one with trust authentication.
Each test gets its own database, copied from ``template0`` (the smallest
there is) and dropped when the test ends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import asyncpg
import pytest

from podindex.store.base import redact

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_HOW_TO_START = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "(scripts/test does this), or point PODINDEX_TEST_POSTGRES at a server's admin database "
    f"(default {DEFAULT_ADMIN_URL})"
)
# The pid and a random token: names stay unique among runs sharing one server.
_PREFIX = f"podindex_test_{os.getpid()}_{secrets.token_hex(3)}_"
_counter = itertools.count()


def admin_url() -> str:
    return os.environ.get("PODINDEX_TEST_POSTGRES") or DEFAULT_ADMIN_URL


def postgres_url(request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database; it is dropped when ``request``'s test ends."""
    admin = admin_url()
    name = f"{_PREFIX}{next(_counter)}"
    try:
        _on_admin(admin, f'CREATE DATABASE "{name}" TEMPLATE template0')
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    else:
        request.addfinalizer(
            lambda: _on_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )
        return urlsplit(admin)._replace(path="/" + name).geturl()
    pytest.fail(
        f"PostgreSQL at {redact(admin)} did not answer ({failure}); {_HOW_TO_START}",
        pytrace=False,
    )


def _on_admin(admin: str, statement: str) -> None:
    """Run one statement on the admin database, on an event loop and a thread of its own.

    The caller is a synchronous fixture, whose test's event loop (pytest-asyncio's)
    may be running on this thread already.
    """

    async def run() -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="podindex-test-pg") as thread:
        thread.submit(asyncio.run, run()).result()
