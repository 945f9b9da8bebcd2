"""A fresh PostgreSQL database per test, on the server this machine runs.

The server is ``$PODINDEX_TEST_POSTGRES`` (a URL of a database to run
``CREATE DATABASE`` from), else the local one with trust authentication.
Each test gets its own database, dropped when the test ends.

Creating a database takes the server ~100 ms (it copies ``template0``), so
one is always being made ahead, on a thread of its own, while a test runs:
a test then waits only for the first one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

import asyncpg
import pytest

from podindex.store.base import redact

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_HOW_TO_START = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "(scripts/test does this), or point PODINDEX_TEST_POSTGRES at a server's admin database "
    "(default " + DEFAULT_ADMIN_URL + ")"
)
_UNREACHABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def admin_url() -> str:
    return os.environ.get("PODINDEX_TEST_POSTGRES") or DEFAULT_ADMIN_URL


def postgres_url(request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database; it is dropped when ``request``'s test ends."""
    global _databases
    if _databases is None or _databases.admin != admin_url():
        if _databases is not None:
            _databases.close()
        _databases = _Databases(admin_url())
        request.config.add_cleanup(_databases.close)
    databases = _databases
    try:
        name = databases.take()
    except _UNREACHABLE as exc:
        pytest.fail(
            f"PostgreSQL at {redact(databases.admin)} did not answer "
            f"({type(exc).__name__}: {exc}); {_HOW_TO_START}",
            pytrace=False,
        )
    request.addfinalizer(lambda: databases.drop(name))
    return urlsplit(databases.admin)._replace(path="/" + name).geturl()


class _Databases:
    """Makes uniquely named databases on one server, one ahead; drops them."""

    def __init__(self, admin: str) -> None:
        self.admin = admin
        # pid and a random token: unique even among machines sharing one server.
        self._prefix = f"podindex_test_{os.getpid()}_{secrets.token_hex(3)}_"
        self._counter = itertools.count()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podindex-test-pg")
        self._next: Future[str] | None = None

    def take(self) -> str:
        """A new database's name (raises what connecting or creating raised)."""
        ready, self._next = self._next, None
        name = (ready or self._create()).result()
        self._next = self._create()
        return name

    def drop(self, name: str) -> None:
        """Drop ``name`` (in the background: the next test need not wait for it)."""
        self._thread.submit(self._run, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        """Drop the database made ahead, and wait for every drop to finish."""
        ready, self._next = self._next, None
        if ready is not None:
            with contextlib.suppress(_UNREACHABLE):
                self.drop(ready.result())
        self._thread.shutdown(wait=True)

    def _create(self) -> Future[str]:
        name = f"{self._prefix}{next(self._counter)}"

        def create() -> str:
            self._run(f'CREATE DATABASE "{name}" TEMPLATE template0')
            return name

        return self._thread.submit(create)

    def _run(self, statement: str) -> None:
        """Run one statement on the admin database, on an event loop of this thread's own."""

        async def run() -> None:
            conn = await asyncpg.connect(self.admin, timeout=5)
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())


_databases: _Databases | None = None
