"""DDL that waits for a table lock gives way, then tries again (``MIGRATE_DDL_LOCK_RETRIES``).

A statement that waited ``MIGRATE_DDL_LOCK_TIMEOUT`` for its table lock fails, so that the
queries queued behind it run again; it is then tried again after a pause that grows, with
jitter (replicas do not retry in step), while the migration lock stays held:

- inside a transaction, on a database whose DDL is transactional (PostgreSQL, SQLite), the
  failed statement aborted the transaction: the revision is rolled back (nothing of it
  committed) and the upgrade runs again from what the database holds (``Start.apply``);
- where a statement commits by itself (MySQL/MariaDB DDL, PostgreSQL's ``autocommit_block()``)
  the statement that timed out is what is tried again (``retried_statements``): the ones before
  it stay, and the log says so.

Every attempt that times out logs who blocked it (``MigrationMonitor``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from ..backends.base import Backend, Blocker
from ..backends.sessions import session_id_of
from ..foundation import progress
from ..foundation.settings import MigrateSettings
from .monitor import MigrationMonitor, describe

FIRST_PAUSE = 1.0
"""Seconds before the second attempt; each later pause doubles, up to ``LONGEST_PAUSE``."""
LONGEST_PAUSE = 30.0

_MARKERS = ("lock timeout", "lock wait timeout exceeded")


def is_lock_timeout(error: BaseException) -> bool:
    """Whether ``error`` (a driver's, or SQLAlchemy's wrapping one) is a lock wait timeout:
    PostgreSQL's ``lock_timeout`` (55P03), MySQL/MariaDB's 1205."""
    driver_error = getattr(error, "orig", None) or error
    text = str(driver_error).lower()
    return any(marker in text for marker in _MARKERS)


def pause(attempt: int) -> float:
    """The pause after the ``attempt``-th timed-out attempt: 1, 2, 4... s (at most 30), +-50%."""
    base: float = min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (attempt - 1))
    return base * random.uniform(0.5, 1.5)


def attempts_line(attempt: int, retries: int) -> str:
    return f"attempt {attempt} of {retries + 1}"


def give_way(
    running: str, settings: MigrateSettings, attempt: int, blockers: list[Blocker]
) -> None:
    """After the ``attempt``-th timeout of a revision that was rolled back: say so, and who
    blocked it, then pause before the next attempt (the migration lock stays held)."""
    wait = pause(attempt)
    progress.log.warning(
        "%s waited more than %gs for a table lock (MIGRATE_DDL_LOCK_TIMEOUT), %s; %s; rolled "
        "back, nothing of it committed; trying again in %.1fs, still holding the migration lock",
        running,
        settings.ddl_lock_timeout,
        attempts_line(attempt, settings.ddl_lock_retries),
        describe(blockers),
        wait,
    )
    time.sleep(wait)


@contextmanager
def retried_statements(
    backend: Backend, ddl_lock_timeout: float, retries: int, monitor: MigrationMonitor
) -> Iterator[None]:
    """Within the block, a statement of this thread that commits by itself and times out
    waiting for a lock is run again, up to ``retries`` times; inside a transaction of a
    transactional-DDL database it is left to fail (the revision is retried instead)."""
    if ddl_lock_timeout <= 0 or retries <= 0:
        yield
        return
    owner = threading.get_ident()

    def commits_by_itself(context: Any) -> bool:
        if not backend.transactional_ddl:
            return True
        options = getattr(context, "execution_options", None) or {}
        return bool(options.get("isolation_level") == "AUTOCOMMIT")

    def run(cursor: Any, statement: str, context: Any, execute: Any) -> bool | None:
        if threading.get_ident() != owner or not commits_by_itself(context):
            return None  # SQLAlchemy executes it as usual
        session_id = session_id_of(context.root_connection)
        attempt = 1
        while True:
            try:
                execute()
                return True
            except Exception as error:
                if not is_lock_timeout(error) or attempt > retries:
                    raise
                wait = pause(attempt)
                before = (
                    "the statements before it stay applied (MySQL/MariaDB commit each DDL "
                    "statement)"
                    if not backend.transactional_ddl
                    else "the statements before it in its autocommit_block() stay applied"
                )
                progress.log.warning(
                    "a statement of %s waited more than %gs for a table lock "
                    "(MIGRATE_DDL_LOCK_TIMEOUT), %s; %s; that statement is tried again in "
                    "%.1fs, still holding the migration lock; %s",
                    monitor.current(),
                    ddl_lock_timeout,
                    attempts_line(attempt, retries),
                    describe(monitor.blockers()),
                    wait,
                    before,
                )
                time.sleep(wait)
                attempt += 1
                monitor.statement_started(session_id)

    def do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
        return run(cursor, statement, context, lambda: cursor.execute(statement, parameters))

    def do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool | None:
        return run(cursor, statement, context, lambda: cursor.execute(statement))

    event.listen(Engine, "do_execute", do_execute)
    event.listen(Engine, "do_execute_no_params", do_execute_no_params)
    try:
        yield
    finally:
        event.remove(Engine, "do_execute", do_execute)
        event.remove(Engine, "do_execute_no_params", do_execute_no_params)
