"""``ddl_lock_timeout``: bound how long a migration's DDL waits for a table lock.

An ``ALTER TABLE`` queued behind a long transaction holds its place in the lock queue, and every
query on that table then waits behind it: one slow report stalls the whole app. With a lock
timeout the migration fails instead (``MigrationFailed`` naming the revision) and can be retried.

The setting is applied to every connection opened in the migrating thread while the block runs:
our own connection, and whatever engine an ``env.py`` (ours or Alembic's stock ones, sync or
``asyncio.run``) creates, without any change to that ``env.py``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine

from .settings import MigrateSettings


def lock_timeout_statement(dialect: str, seconds: float) -> str | None:
    """The session statement that sets the lock wait limit, or ``None`` where there is none."""
    if seconds <= 0:
        return None  # 0 leaves the server's (or the role's) setting alone
    if dialect == "postgresql":
        return f"SET lock_timeout = {max(1, round(seconds * 1000))}"
    if dialect in ("mysql", "mariadb"):
        # Metadata locks (what ALTER TABLE waits for); whole seconds, at least 1.
        return f"SET SESSION lock_wait_timeout = {max(1, math.ceil(seconds))}"
    return None


@contextmanager
def ddl_lock_timeout(seconds: float) -> Iterator[None]:
    """Within the block, connections opened by this thread get the lock wait limit."""
    if seconds <= 0:
        yield
        return
    owner = threading.get_ident()

    def connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        statement = lock_timeout_statement(dialect.name, seconds)
        if statement is None or threading.get_ident() != owner:
            return None  # SQLAlchemy connects as usual
        connection = dialect.connect(*cargs, **cparams)
        cursor = connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        connection.commit()  # a session setting made in a transaction is lost on rollback
        return connection

    event.listen(Engine, "do_connect", connect)
    try:
        yield
    finally:
        event.remove(Engine, "do_connect", connect)


_TIMEOUT_MARKERS = ("lock timeout", "lock wait timeout exceeded")
_PRIVILEGE_MARKERS = ("permission denied", "command denied", "must be owner")


def failure_hint(error: BaseException, settings: MigrateSettings) -> str:
    """What to do about a revision that failed for a lock or a privilege; else empty."""
    text = str(error).lower()
    if settings.ddl_lock_timeout > 0 and any(m in text for m in _TIMEOUT_MARKERS):
        return (
            f"; it waited more than {settings.ddl_lock_timeout:g}s (MIGRATE_DDL_LOCK_TIMEOUT) "
            "for a table lock held by another transaction (see pg_stat_activity or SHOW "
            "PROCESSLIST): start again once that transaction ends, or raise the timeout"
        )
    if any(m in text for m in _PRIVILEGE_MARKERS):
        if settings.migrate_database_url:
            return "; the role of MIGRATE_DATABASE_URL lacks a privilege this revision needs"
        return (
            "; the role of DATABASE_URL may not run DDL: set MIGRATE_DATABASE_URL to the URL "
            "of a role that owns the schema (the app keeps DATABASE_URL for its queries)"
        )
    return ""
