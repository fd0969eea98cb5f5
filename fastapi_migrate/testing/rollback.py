"""``WorkerDatabase``: the one migrated database a worker's rollback fixtures share.

``migrated_connection`` and ``migrated_async_connection`` hand each test a connection inside a
transaction that is rolled back afterwards: a test costs a ``BEGIN`` and a ``ROLLBACK`` instead
of a database. The rollback only undoes what ran inside that transaction, so this module also
watches for what escapes it: the test committed or rolled back the outer transaction itself, or
ran a statement that commits on its own (``COMMIT`` as text; on MySQL/MariaDB any DDL). Then the
database may differ from the template: it is given back (reset to a fresh copy's state where the
server can prove it, else dropped) and the next test borrows another: a test never sees
another's leftovers, whatever it did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, pool
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..backends import backend_for
from ..backends.drivers import is_async_url, parse_url, sync_url
from ..foundation.errors import ConfigurationError
from ..foundation.redaction import mask_url
from .janitor import MigratedTemplate

_ESCAPED = "fastapi_migrate_escaped"
"""``Connection.info`` key: a statement on this connection may have committed for good."""


class WorkerDatabase:
    """A copy of the template made at first use, shared by this worker's rollback fixtures.

    Given back and borrowed again after a test whose writes may have escaped its transaction.
    """

    def __init__(self, template: MigratedTemplate) -> None:
        self.template = template
        self._lease = ExitStack()
        self._url: str | None = None
        self._engine: Engine | None = None
        self.replacements = 0
        """How many times a test's escaped writes made this worker take a new copy."""

    @property
    def url(self) -> str:
        """The database's URL (the driver the plugin's server URL names); made at first use."""
        if self._url is None:
            copies = self.template.janitor.reused_copies(self.template.name)
            self._url = self._lease.enter_context(copies.borrow())
        return self._url

    def engine(self) -> Engine:
        """A pooled blocking engine: a test checks out a connection already open."""
        if self._engine is None:
            engine = create_engine(sync_url(self.url), poolclass=pool.QueuePool, pool_size=1)
            self._watch(engine)
            self._engine = engine
        return self._engine

    def _watch(self, engine: Engine) -> None:
        """Emit ``BEGIN`` where the driver would not (SQLite), and flag escaping statements."""
        backend_for(engine.dialect.name).engine_created(engine)
        server = self.template.janitor.server

        @event.listens_for(engine, "before_cursor_execute")
        def _flag(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
            if server.commits_by_itself(statement):
                conn.info[_ESCAPED] = True

    def replace(self) -> None:
        """Give this database back (reset where the server can prove it clean, else dropped)
        and borrow one in a fresh copy's state at the next use."""
        self.close()
        self.replacements += 1

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._lease.close()
        self._url = None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection inside a transaction that is rolled back when the block ends."""
        conn = self.engine().connect()
        conn.info[_ESCAPED] = False
        outer = conn.begin()
        try:
            yield conn
        finally:
            escaped = bool(conn.info.pop(_ESCAPED, True)) or not outer.is_active
            try:
                if outer.is_active:
                    outer.rollback()
            finally:
                conn.close()
                if escaped:
                    self.replace()

    @asynccontextmanager
    async def async_connection(self) -> AsyncIterator[AsyncConnection]:
        """The same through the URL's asyncio driver; a new engine per test, because an
        asyncio connection belongs to the event loop that opened it."""
        url = parse_url(self.url, "--migrate-db-url")
        if not is_async_url(url):
            raise ConfigurationError(
                f"migrated_async_connection needs an asyncio driver in the test server's URL, "
                f"got {mask_url(url)}: pass --migrate-db-url (or MIGRATE_TEST_DATABASE_URL) "
                "such as sqlite+aiosqlite://, postgresql+asyncpg://... or mysql+aiomysql://..."
            )
        engine: AsyncEngine = create_async_engine(url, poolclass=pool.NullPool)
        self._watch(engine.sync_engine)
        escaped = True
        try:
            conn = await engine.connect()
            try:
                conn.sync_connection.info[_ESCAPED] = False  # type: ignore[union-attr]
                outer = await conn.begin()
                try:
                    yield conn
                finally:
                    info = conn.sync_connection.info if conn.sync_connection else {}
                    escaped = bool(info.pop(_ESCAPED, True)) or not outer.is_active
                    if outer.is_active:
                        await outer.rollback()
            finally:
                await conn.close()
        finally:
            await engine.dispose()
            if escaped:
                self.replace()
