"""``MigrationLock``: one migrator at a time, across processes and within one.

Session-level locks (PostgreSQL advisory locks, MySQL ``GET_LOCK``, an OS file lock) die with
their connection or process, so a killed migrator never leaves a lock behind. Waiters poll a
non-blocking try-lock on an autocommit connection: no transaction stays open while waiting, and
a role's ``lock_timeout`` or a ``CREATE INDEX CONCURRENTLY`` cannot catch a blocked waiter.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, exc, text

from .advisory import AdvisoryHold, release, try_advisory_lock
from .database import Database, DedicatedConnection
from .errors import ConfigurationError, DatabaseUnavailable, LockTimeout

log = logging.getLogger("fastapi_migrate")

# Alembic keeps its context in module globals: two migrations in one process must not overlap.
PROCESS_LOCK = threading.Lock()

_NAMESPACE = "fastapi_migrate"
_MAX_POLL_DELAY = 0.5  # seconds between two attempts at the lock, at most (before jitter)


def lock_name(database: str | None, schema: str | None, version_table: str) -> str:
    """A stable, at most 64-character name for the version table's lock (MySQL's limit)."""
    base = f"{_NAMESPACE}:{database or ''}.{schema or ''}.{version_table}"
    if len(base) <= 64:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:20]
    return f"{_NAMESPACE}:{digest}:{version_table}"[:64]


def advisory_key(schema: str | None, version_table: str) -> int:
    """A stable signed 64-bit key (never Python's salted ``hash()``) for ``pg_advisory_lock``."""
    digest = hashlib.sha256(f"{_NAMESPACE}:{schema or ''}.{version_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class WaitEnded(Exception):
    """The wait for the lock stopped because ``waiting_ends_when``'s check became true."""


_wait_ends_when: ContextVar[Callable[[], bool] | None] = ContextVar(
    "fastapi_migrate_wait_ends_when", default=None
)


@contextmanager
def waiting_ends_when(check: Callable[[], bool]) -> Iterator[None]:
    """Within this block a wait for the lock raises ``WaitEnded`` once ``check()`` is true
    (checked between attempts): a start waiting for another's migration needs its result,
    not the lock, and waiters queueing for the lock one by one would pay for it in turn."""
    token = _wait_ends_when.set(check)
    try:
        yield
    finally:
        _wait_ends_when.reset(token)


def _poll(try_once: Callable[[], bool], timeout: float, on_timeout: Callable[[], str]) -> None:
    """Call ``try_once`` with jittered backoff until it succeeds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    ends = _wait_ends_when.get()
    while not try_once():
        if ends is not None and ends():
            raise WaitEnded
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockTimeout(
                f"another process held the migration lock for more than {timeout:g}s "
                f"(MIGRATE_LOCK_TIMEOUT){on_timeout()}; if it is still migrating, wait or "
                "raise the timeout"
            )
        time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
        # Capped low: each attempt is a query or two on connections already open, and a
        # waiter should notice the end of another's migration within a fraction of a second.
        delay = min(delay * 1.5, _MAX_POLL_DELAY)


@contextmanager
def process_lock(timeout: float) -> Iterator[None]:
    """The in-process half of the lock: serialize Alembic's global context."""
    if not PROCESS_LOCK.acquire(timeout=timeout if timeout > 0 else -1):
        raise LockTimeout(
            f"another migration in this process ran for more than {timeout:g}s "
            "(MIGRATE_LOCK_TIMEOUT)"
        )
    try:
        yield
    finally:
        PROCESS_LOCK.release()


@contextmanager
def _postgresql_lock(
    db: Database, schema: str | None, table: str, timeout: float
) -> Iterator[None]:
    key = advisory_key(schema, table)
    holds: list[AdvisoryHold] = []
    with db.connection(autocommit=True) as conn:

        def try_once() -> bool:
            hold = conn.run(lambda c: try_advisory_lock(c, key, db.variable))
            if hold is not None:
                holds.append(hold)
            return hold is not None

        def holder() -> str:
            def query(c: Connection) -> str:
                row = c.execute(
                    text(
                        "SELECT a.pid, a.application_name, a.client_addr, a.state, "
                        "now() - a.backend_start FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted "
                        "AND l.database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database()) "
                        "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
                    ),
                    {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
                ).first()
                if row is None:
                    return ""
                return (
                    f"; held by PostgreSQL backend pid {row[0]} (application "
                    f"{row[1] or '?'}, client {row[2] or 'local'}, state {row[3]}, "
                    f"connected {row[4]})"
                )

            return _describe(lambda: conn.run(query))

        _poll(_connection_kept(db, try_once), timeout, holder)
        try:
            yield
        finally:
            _release_quietly(db, lambda: conn.run(lambda c: release(c, holds[0])))


@contextmanager
def _mysql_lock(db: Database, schema: str | None, table: str, timeout: float) -> Iterator[None]:
    name = lock_name(db.url.database, schema, table)
    with db.connection(autocommit=True) as conn:

        def try_once() -> bool:
            return (
                conn.run(lambda c: c.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar())
                == 1
            )

        def holder() -> str:
            def query(c: Connection) -> str:
                row = c.execute(
                    text(
                        "SELECT p.ID, p.USER, p.HOST, p.TIME FROM information_schema.PROCESSLIST p "
                        "WHERE p.ID = IS_USED_LOCK(:n)"
                    ),
                    {"n": name},
                ).first()
                if row is None:
                    return ""
                return f"; held by connection {row[0]} ({row[1]}@{row[2]}, busy {row[3]}s)"

            return _describe(lambda: conn.run(query))

        _poll(_connection_kept(db, try_once), timeout, holder)
        try:
            yield
        finally:
            _release_quietly(
                db,
                lambda: conn.run(lambda c: c.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})),
            )


def sqlite_lock_path(db: Database) -> Path | None:
    """The lock file beside a SQLite database file; ``None`` for in-memory databases."""
    database = db.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if db.url.query.get("mode") == "memory":
        return None
    path = database[5:] if database.startswith("file:") else database
    return Path(path.split("?", 1)[0]).resolve().with_name(Path(path).name + ".migrate-lock")


@contextmanager
def _sqlite_lock(db: Database, timeout: float) -> Iterator[None]:
    path = sqlite_lock_path(db)
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a+") as handle:

        def try_once() -> bool:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            _write_owner(handle)
            return True

        def holder() -> str:
            handle.seek(0)
            owner = handle.read().strip()
            return f"; held by {owner} (lock file {path})" if owner else f" (lock file {path})"

        _poll(try_once, timeout, holder)
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _connection_kept(db: Database, try_once: Callable[[], bool]) -> Callable[[], bool]:
    """``try_once``, with the connection lost while waiting (a failover, a terminated backend)
    turned into one clear error: this start gives up, the next one finds out what happened."""

    def attempt() -> bool:
        try:
            return try_once()
        except exc.DBAPIError as error:
            reason = (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]
            raise DatabaseUnavailable(
                f"lost the connection to {db.masked_url} while waiting for the migration "
                f"lock: {db.redact(reason)}; start again once the database answers"
            ) from None

    return attempt


def _release_quietly(db: Database, unlock: Callable[[], object]) -> None:
    """Release the lock; if its connection died, the server already dropped the lock with it,
    and the error must not hide how the migration itself went."""
    try:
        unlock()
    except exc.DBAPIError as error:
        log.warning(
            "the migration lock's connection was lost (%s); the server released the lock with it",
            db.redact((str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]),
        )


def _write_owner(handle: IO[str]) -> None:
    handle.seek(0)
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()


def _describe(query: Callable[[], str]) -> str:
    """Who holds the lock, or nothing when the database cannot say."""
    try:
        return query()
    except Exception:
        return ""


def migration_lock(
    db: Database,
    *,
    version_table: str,
    version_table_schema: str | None,
    timeout: float,
    enabled: bool = True,
) -> AbstractContextManager[None]:
    """The process lock plus the database lock for this dialect, released in reverse order."""
    stack = ExitStack()

    @contextmanager
    def both() -> Iterator[None]:
        with stack:
            stack.enter_context(process_lock(timeout))
            if not enabled:
                yield
                return
            dialect = db.dialect_name
            if dialect == "postgresql":
                stack.enter_context(
                    _postgresql_lock(db, version_table_schema, version_table, timeout)
                )
            elif dialect in ("mysql", "mariadb"):
                stack.enter_context(_mysql_lock(db, version_table_schema, version_table, timeout))
            elif dialect == "sqlite":
                stack.enter_context(_sqlite_lock(db, timeout))
            else:
                raise ConfigurationError(
                    f"fastapi-migrate has no migration lock for {dialect!r}; set "
                    "MIGRATE_LOCK=false if only one process ever migrates this database"
                )
            yield

    return both()


__all__ = ["DedicatedConnection", "advisory_key", "lock_name", "migration_lock", "process_lock"]
