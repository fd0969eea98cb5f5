"""``Database``: run plain sync functions on a URL, whatever its driver (sync or async).

The plugin's own work (reading the version, the lock, ``create_all``, stamps) is written once as
functions of a sync ``Connection``. Async URLs run them through ``AsyncConnection.run_sync`` on a
private event loop that is never running between calls, so an ``env.py`` that calls
``asyncio.run()`` in the same thread still works.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc, pool
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import ConfigurationError, DatabaseUnavailable
from .urls import has_unescaped_at, mask_url, redact

T = TypeVar("T")

_DRIVER_EXTRAS = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
# Keywords that bound a sync driver's connection attempt, handshake included (async drivers are
# bounded by wait_for). pymysql's connect_timeout covers only TCP: its read/write timeouts bound
# the handshake and are lifted once connected, so a long DDL statement is never cut.
_CONNECT_TIMEOUT_ARGS = {
    "psycopg": ("connect_timeout",),
    "psycopg2": ("connect_timeout",),
    "pymysql": ("connect_timeout", "read_timeout", "write_timeout"),
    "mysqldb": ("connect_timeout",),
}
# Messages that no amount of retrying will fix.
_PERMANENT = (
    "password authentication failed",
    "access denied",
    "authentication failed",
    "does not exist",
    "unknown database",
    "unable to open database file",
)


def parse_url(url: str | URL, variable: str = "DATABASE_URL") -> URL:
    """A SQLAlchemy URL, or a ``ConfigurationError`` that names the variable but no password."""
    if isinstance(url, str) and has_unescaped_at(url):
        raise ConfigurationError(
            f"{variable}: {mask_url(url)}: the password holds a raw '@', so the rest of it "
            "would be read as the host; write each '@' in the password as %40"
        )
    try:
        return url if isinstance(url, URL) else make_url(url)
    except (exc.ArgumentError, ValueError) as error:
        raise ConfigurationError(
            f"{variable}: {mask_url(str(url))} is not a database URL "
            f"(expected e.g. postgresql+psycopg://user:password@host/db): "
            f"{redact(str(error), [str(url)])}"
        ) from None


def is_async_url(url: URL) -> bool:
    """Whether the URL names an asyncio driver (``asyncpg``, ``aiosqlite``, ``aiomysql``...)."""
    try:
        return bool(url.get_dialect().is_async)
    except Exception:
        return False


def _enable_sqlite_transactions(engine: Engine) -> None:
    """Make pysqlite emit BEGIN, so a failed revision's DDL rolls back (SQLAlchemy's recipe)."""

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _emit_begin(connection: Connection) -> None:
        # Not under AUTOCOMMIT (Alembic's autocommit_block): VACUUM and friends refuse a BEGIN.
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN")


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
                self._async_engine: AsyncEngine | None = create_async_engine(
                    self.url, poolclass=pool.NullPool
                )
                self.engine = self._async_engine.sync_engine
            else:
                self._async_engine = None
                self.engine = create_engine(self.url, poolclass=pool.NullPool)
        except exc.NoSuchModuleError:
            raise ConfigurationError(
                f"{variable}: unknown database driver {self.url.drivername!r} in "
                f"{mask_url(self.url)}"
            ) from None
        except ImportError as error:
            extra = _DRIVER_EXTRAS.get(self.url.get_backend_name(), "async")
            raise ConfigurationError(
                f"{variable}: the driver for {self.url.drivername!r} is not installed "
                f"({error.name or error}); pip install 'fastapi-migrate-on-startup[{extra}]' "
                "or the driver itself"
            ) from None
        if self.dialect_name == "sqlite":
            _enable_sqlite_transactions(self.engine)
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

    def wait_until_reachable(self, timeout: float) -> None:
        """Connect, retrying with backoff for ``timeout`` seconds, else ``DatabaseUnavailable``."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        attempts = 0
        while True:
            attempts += 1
            try:
                self._attempt_timeout = max(deadline - time.monotonic(), 1.0)
                try:
                    self.run(lambda c: c.exec_driver_sql("SELECT 1").scalar())
                finally:
                    self._attempt_timeout = None
                return
            except UnicodeError as error:
                # PyMySQL and aiomysql send the user and password as latin-1: no retry helps.
                raise ConfigurationError(
                    f"{self.variable}: the {self.url.drivername} driver cannot send the user "
                    f"or password of {self.masked_url} ({getattr(error, 'encoding', '?')} has no "
                    "encoding for some of their characters); change them, or the driver"
                ) from None
            except (exc.DBAPIError, OSError) as error:
                reason = self.redact(_first_line(error))
                permanent = self.dialect_name == "sqlite" or any(
                    marker in reason.lower() for marker in _PERMANENT
                )
                remaining = deadline - time.monotonic()
                if permanent or remaining <= 0:
                    raise DatabaseUnavailable(
                        f"cannot connect to {self.masked_url} "
                        f"({attempts} attempt{'s' if attempts > 1 else ''} in "
                        f"{timeout - max(0.0, deadline - time.monotonic()):.1f}s; "
                        f"MIGRATE_CONNECT_TIMEOUT={timeout:g}): {reason}"
                    ) from None
            # The last attempt lands on the deadline: connect_timeout is all used.
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, 2.0)

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
        timeout = database.connect_bound()
        if timeout is not None:
            # libpq counts whole seconds, and at least 2.
            whole = max(2, math.ceil(timeout))
            cparams.update(
                {name: whole if name == "connect_timeout" else timeout for name in names}
            )

    @event.listens_for(database.engine, "connect")
    def _unbounded_reads(dbapi_connection: Any, _record: Any) -> None:
        for name in ("_read_timeout", "_write_timeout"):  # pymysql: checked before each I/O
            if hasattr(dbapi_connection, name):
                setattr(dbapi_connection, name, None)


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


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
