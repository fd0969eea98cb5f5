"""``migration_lock``: one migrator at a time, across processes and within one.

Session-level locks (PostgreSQL advisory locks, MySQL ``GET_LOCK``, an OS file lock: each
database's own, in ``backends``) die with their connection or process, so a killed migrator never
leaves a lock behind. Waiters poll a non-blocking try-lock on an autocommit connection: no
transaction stays open while waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from sqlalchemy import exc

from ..backends.base import SessionLock
from ..backends.database import Database
from .errors import DatabaseUnavailable, LockTimeout
from .redaction import error_line
from .retry import poll

log = logging.getLogger("fastapi_migrate")

# Alembic keeps its context in module globals: two migrations in one process must not overlap.
PROCESS_LOCK = threading.Lock()


class WaitEnded(Exception):
    """The wait for the lock stopped because its ``ends_when`` check became true: a start
    waiting for another's migration needs its result, not the lock."""


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
def migration_lock(
    db: Database,
    *,
    version_table: str,
    version_table_schema: str | None,
    timeout: float,
    enabled: bool = True,
    ends_when: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """The process lock plus the database's lock for this version table; ``WaitEnded`` once
    ``ends_when()`` is true while waiting (checked between attempts)."""
    with process_lock(timeout), ExitStack() as stack:
        if not enabled:
            yield
            return
        backend = db.backend
        # A SQLite lock is a file: opening a connection there would create the database.
        session = (
            stack.enter_context(db.connection(autocommit=True))
            if backend.lock_needs_connection
            else None
        )
        lock = backend.session_lock(
            session,
            db.url,
            schema=version_table_schema,
            table=version_table,
            variable=db.variable,
        )
        if lock is None:
            yield
            return
        stack.callback(lock.close)
        _acquire(db, lock, timeout, ends_when)
        try:
            yield
        finally:
            _release_quietly(db, lock)


def _acquire(
    db: Database, lock: SessionLock, timeout: float, ends_when: Callable[[], bool] | None
) -> None:
    def attempt() -> bool | None:
        try:
            if lock.try_acquire():
                return True
        except exc.DBAPIError as error:
            # Lost while waiting (a failover, a terminated backend): this start gives up, the
            # next one finds out what happened.
            raise DatabaseUnavailable(
                f"lost the connection to {db.masked_url} while waiting for the migration "
                f"lock: {error_line(error, [db.url])}; start again once the database answers"
            ) from None
        if ends_when is not None and ends_when():
            raise WaitEnded
        return None

    def timed_out() -> LockTimeout:
        try:
            holder = lock.holder()
        except Exception:  # who holds it is a nicety, never a second error
            holder = ""
        return LockTimeout(
            f"another process held the migration lock for more than {timeout:g}s "
            f"(MIGRATE_LOCK_TIMEOUT){holder}; if it is still migrating, wait or raise the timeout"
        )

    poll(attempt, timeout, timed_out)


def _release_quietly(db: Database, lock: SessionLock) -> None:
    """Release the lock; if its connection died, the server already dropped the lock with it,
    and the error must not hide how the migration itself went."""
    try:
        lock.release()
    except exc.DBAPIError as error:
        log.warning(
            "the migration lock's connection was lost (%s); the server released the lock with it",
            error_line(error, [db.url]),
        )
