"""``Database``: run plain sync functions on a URL, whatever its driver (sync or async).

The plugin's own work (reading the version, the lock, ``create_all``, stamps) is written once as
functions of a sync ``Connection``. Async URLs run them through ``AsyncConnection.run_sync`` on a
private event loop that is never running between calls, so an ``env.py`` that calls
``asyncio.run()`` in the same thread still works.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, create_engine, event, exc, pool
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import DBAPICursor

from ..foundation.errors import ConfigurationError, DatabaseUnavailable
from ..foundation.redaction import error_line, mask_url, redact
from ..foundation.retry import CONNECT_CAP, poll
from . import Backend, backend_for
from .drivers import EXTRAS, is_async_url, missing_driver_hint, parse_url

if TYPE_CHECKING:  # the asyncio extension needs greenlet: imported only for async URLs
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")
# Keywords that bound a sync driver's connection attempt, handshake included (async drivers are
# bounded by wait_for). pymysql's connect_timeout covers only TCP: its read/write timeouts bound
# the handshake and are lifted once connected, so a long DDL statement is never cut.
_CONNECT_TIMEOUT_ARGS = {
    "psycopg": ("connect_timeout",),
    "psycopg2": ("connect_timeout",),
    "pymysql": ("connect_timeout", "read_timeout", "write_timeout"),
    "mysqldb": ("connect_timeout",),
}
# Drivers that take ``autocommit`` when connecting (and otherwise turn it off there).
_AUTOCOMMIT_ON_CONNECT = ("pymysql", "mysqldb")


def check_dialect(url: URL, variable: str = "DATABASE_URL") -> None:
    """That SQLAlchemy has a dialect for ``url``, as ``Database`` would find; the driver itself
    is not imported (``lint A:B`` renders offline and may never connect)."""
    try:
        url.get_dialect()
    except exc.NoSuchModuleError as error:
        raise driver_error(url, variable, error) from None


def driver_error(url: URL, variable: str, error: Exception) -> ConfigurationError:
    """What to say when SQLAlchemy has no dialect for ``url``, or its driver is missing."""
    if isinstance(error, exc.NoSuchModuleError):
        if url.get_backend_name() == "cockroachdb":
            return ConfigurationError(
                f"{variable}: the CockroachDB dialect is not installed for "
                f"{mask_url(url)}: pip install sqlalchemy-cockroachdb (the migration "
                "lock there is a lease in a table, chosen by itself)"
            )
        return ConfigurationError(
            f"{variable}: unknown database driver {url.drivername!r} in {mask_url(url)}"
        )
    name = error.name if isinstance(error, ImportError) else None
    extra = EXTRAS.get(url.get_backend_name(), "async")
    hint = missing_driver_hint(url, name)
    return ConfigurationError(
        f"{variable}: the driver for {url.drivername!r} is not installed ({name or error})"
        + (hint or f"; pip install 'fastapi-migrate-on-startup[{extra}]' or the driver itself")
    )


class Database:
    """One database, reached through a NullPool engine; closes everything it opened."""

    def __init__(
        self,
        url: str | URL,
        *,
        variable: str = "DATABASE_URL",
        connect_timeout: float | None = None,
    ) -> None:
        self.url = parse_url(url, variable)
        # Bounds each connection attempt: a server that accepts TCP but never answers (frozen,
        # or a proxy whose backend is down) would otherwise hang the start forever.
        self.connect_timeout = connect_timeout
        self.variable = variable
        self.is_async = is_async_url(self.url)
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            if self.is_async:
                from sqlalchemy.ext.asyncio import create_async_engine

                self._async_engine: AsyncEngine | None = create_async_engine(
                    self.url, poolclass=pool.NullPool, pool_reset_on_return=None
                )
                self.engine = self._async_engine.sync_engine
            else:
                self._async_engine = None
                # NullPool closes every connection it gets back: no rollback first, which on a
                # connection the server dropped would only log a traceback.
                self.engine = create_engine(
                    self.url, poolclass=pool.NullPool, pool_reset_on_return=None
                )
        except (exc.NoSuchModuleError, ImportError) as error:
            raise driver_error(self.url, variable, error) from None
        self.backend: Backend = backend_for(self.dialect_name)
        self.backend.check_url(self.url, variable)
        self.backend.engine_created(self.engine)
        self._attempt_timeout: float | None = None
        names = _CONNECT_TIMEOUT_ARGS.get(self.url.get_driver_name(), ())
        if names and not self.is_async:
            _bound_sync_connects(self, names)

    @property
    def dialect_name(self) -> str:
        return self.engine.dialect.name

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def redact(self, text: str) -> str:
        return redact(text, [self.url])

    # -- running functions -------------------------------------------------------------

    def run(self, fn: Callable[[Connection], T], *, autocommit: bool = False) -> T:
        """Run ``fn`` on a new connection in one transaction, committed if it returns."""
        with self.connection(autocommit=autocommit) as conn:
            return conn.run(fn)

    @contextmanager
    def connection(self, *, autocommit: bool = False) -> Iterator[DedicatedConnection]:
        """A connection kept open for several calls (the lock needs its own session)."""
        conn = DedicatedConnection(self, autocommit=autocommit)
        try:
            yield conn
        finally:
            conn.close()

    def read_bare(self, fn: Callable[[DBAPICursor], T], *, wait: bool = True) -> T:
        """``fn`` on a cursor of a bare driver connection, then closed, nothing committed.

        No pool, no events and no dialect initialization: on PostgreSQL the initialization
        costs more round trips than the read itself (``SELECT version()``, the schema, the
        isolation level). For the no-op check, whose one ``SELECT`` needs none of it. Sync
        drivers only: an async driver's connection needs a greenlet. ``wait=False``: a SQLite
        file locked by another process fails at once instead of after the busy timeout.
        """
        if self.is_async:
            raise TypeError(f"{self.url.drivername} is async: read_bare needs a sync driver")
        dialect = self.engine.dialect
        cargs, cparams = dialect.create_connect_args(self.url)
        cparams = dict(cparams)
        self.backend.connect_params(dialect.driver, cparams)
        _bound(self, cparams)
        if dialect.driver in _AUTOCOMMIT_ON_CONNECT:
            cparams["autocommit"] = True  # else they send SET AUTOCOMMIT=0, then =1
        if not wait and dialect.name == "sqlite":
            cparams["timeout"] = 0.0
        connection = dialect.connect(*cargs, **cparams)
        try:
            # No transaction left open at close: behind a transaction pooler (PgBouncer), a
            # client gone mid-transaction makes it close the server session, which another
            # client's session lock may live on. Autocommit also spares BEGIN and ROLLBACK.
            dialect.set_isolation_level(connection, "AUTOCOMMIT")
            cursor = connection.cursor()
            try:
                return fn(cursor)
            finally:
                cursor.close()
        finally:
            connection.close()

    def wait_until_reachable(
        self, timeout: float, *, since: float | None = None, failed: BaseException | None = None
    ) -> None:
        """Connect, retrying with backoff for ``timeout`` seconds, else ``DatabaseUnavailable``;
        at once for an error that waiting cannot fix. ``failed``: the error of an attempt made
        at ``since`` (the fast no-op check's), counted as the first: the timeout is spent once,
        not once by that attempt and again here."""
        started = since if since is not None else time.monotonic()
        deadline = started + timeout
        attempts = [0]
        last = [""]

        def judge(error: BaseException) -> None:
            last[0] = self.redact(_reason(error))
            if not self.backend.connect_error_heals(error):
                raise unavailable() from None  # waiting would not fix it: say so now

        def attempt() -> bool | None:
            attempts[0] += 1
            # A connection attempt may use what is left of the deadline, at least a second.
            self._attempt_timeout = max(deadline - time.monotonic(), 1.0)
            try:
                self.run(lambda c: c.exec_driver_sql("SELECT 1").scalar())
                return True
            except UnicodeError as error:
                # PyMySQL and aiomysql send the user and password as latin-1: no retry helps.
                raise ConfigurationError(
                    f"{self.variable}: the {self.url.drivername} driver cannot send the user "
                    f"or password of {self.masked_url} ({getattr(error, 'encoding', '?')} has no "
                    "encoding for some of their characters); change them, or the driver"
                ) from None
            except (exc.DBAPIError, OSError) as error:
                judge(error)
                return None
            finally:
                self._attempt_timeout = None

        def unavailable() -> DatabaseUnavailable:
            count = attempts[0]
            return DatabaseUnavailable(
                f"cannot connect to {self.masked_url} ({count} attempt{'s' if count > 1 else ''}"
                f" in {time.monotonic() - started:.1f}s; MIGRATE_CONNECT_TIMEOUT={timeout:g}): "
                f"{last[0]}"
            )

        if failed is not None:
            attempts[0] = 1
            judge(failed)
            if time.monotonic() >= deadline:
                raise unavailable()
        poll(attempt, deadline - time.monotonic(), unavailable, cap=CONNECT_CAP)

    def connect_bound(self) -> float | None:
        """Seconds one connection attempt may take: the probe's share of the deadline, else
        ``connect_timeout``."""
        return self._attempt_timeout or self.connect_timeout

    # -- the private event loop for async drivers --------------------------------------

    def _run_async(self, coro: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def dispose(self) -> None:
        if self._async_engine is not None:
            self._run_async(self._async_engine.dispose())
        else:
            self.engine.dispose()
        if self._loop is not None:
            self._loop.close()
            self._loop = None


class DedicatedConnection:
    """A connection of a ``Database`` on which sync functions run, one transaction each."""

    def __init__(self, database: Database, *, autocommit: bool) -> None:
        self._database = database
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
        self._async: AsyncConnection | None = None
        self._sync: Connection | None = None
        if database._async_engine is not None:
            engine = database._async_engine.execution_options(**options)
            self._async = database._run_async(_within(engine.connect(), database.connect_bound()))
        else:
            self._sync = database.engine.execution_options(**options).connect()

    @property
    def sync_connection(self) -> Connection | None:
        """The sync ``Connection`` for sync drivers (handed to ``env.py``), else ``None``."""
        return self._sync

    def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a transaction, committed if it returns, rolled back if it raises."""
        if self._sync is not None:
            with self._sync.begin():
                return fn(self._sync)
        assert self._async is not None
        return self._database._run_async(_run_in_transaction(self._async, fn))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
        elif self._async is not None:
            self._database._run_async(self._async.close())


def _bound_sync_connects(database: Database, names: tuple[str, ...]) -> None:
    """Pass the driver its connect timeout; lift pymysql's read/write ones once connected."""

    @event.listens_for(database.engine, "do_connect")
    def _bounded(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        _bound(database, cparams)

    @event.listens_for(database.engine, "connect")
    def _unbounded_reads(dbapi_connection: Any, _record: Any) -> None:
        for name in ("_read_timeout", "_write_timeout"):  # pymysql: checked before each I/O
            if hasattr(dbapi_connection, name):
                setattr(dbapi_connection, name, None)


def _bound(database: Database, cparams: dict[str, Any]) -> None:
    """Add the driver's connect timeout keywords, bounded by ``connect_bound()``."""
    timeout = database.connect_bound()
    names = _CONNECT_TIMEOUT_ARGS.get(database.url.get_driver_name(), ())
    if timeout is not None and names and not database.is_async:
        # libpq counts whole seconds, and at least 2.
        whole = max(2, math.ceil(timeout))
        cparams.update({name: whole if name == "connect_timeout" else timeout for name in names})


async def _within(connecting: Any, timeout: float | None) -> Any:
    """Await an async driver's connection for at most ``timeout`` seconds."""
    if timeout is None:
        return await connecting
    try:
        return await asyncio.wait_for(connecting, timeout)
    except asyncio.TimeoutError:
        raise OSError(f"no answer within {timeout:.1f}s") from None


async def _run_in_transaction(conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
    async with conn.begin():
        return await conn.run_sync(fn)


def _reason(error: BaseException) -> str:
    """The driver's first line, without the exception's type (a connection error's message
    says enough, and is what a user searches for)."""
    return error_line(error).split(": ", 1)[-1]
