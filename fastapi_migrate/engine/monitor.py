"""``MigrationMonitor``: one thread that watches a running migration from the outside.

- Who blocks it. A statement waiting for a table lock is only known to be blocked while it
  waits (PostgreSQL's ``pg_blocking_pids`` of a session that stopped waiting is empty), so while
  a statement of the migration has been running for part of ``MIGRATE_DDL_LOCK_TIMEOUT`` the
  monitor asks, on a connection of its own, which sessions it waits for, and keeps the answer
  for the lock timeout's log line and message. It asks only during the first
  ``ddl_lock_timeout`` seconds of a statement (where a lock wait ends in a timeout) and opens
  its connection only then: a migration of quick statements never opens it.
- A revision that runs for long logs a line every ``PROGRESS_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

from ..backends.base import Blocker
from ..backends.database import Database
from ..backends.sessions import session_id_of
from ..foundation import progress
from ..foundation.progress import RevisionProgress
from ..foundation.redaction import error_line

log = logging.getLogger("fastapi_migrate")

SHORTEST_POLL = 0.05
LONGEST_POLL = 1.0


@dataclass(frozen=True)
class _Statement:
    session_id: int
    started: float
    number: int


class MigrationMonitor:
    """Tracks this thread's statements (``statement_started`` / ``statement_ended``, called
    from SQLAlchemy's cursor events and the statement retries) and watches them."""

    def __init__(self, db: Database, ddl_lock_timeout: float, revisions: RevisionProgress) -> None:
        self.db = db
        self.ddl_lock_timeout = ddl_lock_timeout
        self.revisions = revisions
        self.watch_blockers = ddl_lock_timeout > 0 and db.backend.session_id_statement is not None
        self.poll = min(LONGEST_POLL, max(SHORTEST_POLL, ddl_lock_timeout / 4))
        self._owner = threading.get_ident()
        self._statement: _Statement | None = None
        self._numbers = 0
        self._seen: tuple[int, list[Blocker]] = (-1, [])
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="fastapi-migrate-monitor", daemon=True
        )
        self._stack = ExitStack()
        self._session: Any = None

    # -- the migrating thread -------------------------------------------------------------

    def statement_started(self, session_id: int | None) -> int:
        """A statement of the migration starts (again) on the session ``session_id``."""
        self._numbers += 1
        if session_id is not None:
            self._statement = _Statement(session_id, time.monotonic(), self._numbers)
        return self._numbers

    def statement_ended(self) -> None:
        self._statement = None

    def current(self) -> str:
        """The revision running, for a log line."""
        running = self.revisions.running()
        if running is None:
            return "the migration"
        return f"{self.revisions.prefix}revision {self.revisions.name(running[0])}"

    def blockers(self) -> list[Blocker]:
        """Who the last statement waited for, as last seen while it waited."""
        number, seen = self._seen
        return list(seen) if number == self._numbers else []

    @contextmanager
    def watching(self) -> Iterator[MigrationMonitor]:
        """The thread runs, and this thread's statements are tracked, within the block."""

        def before(conn: Any, *_: Any) -> None:
            if threading.get_ident() == self._owner:
                self.statement_started(session_id_of(conn))

        def after(*_: Any) -> None:
            if threading.get_ident() == self._owner:
                self.statement_ended()

        event.listen(Engine, "before_cursor_execute", before)
        event.listen(Engine, "after_cursor_execute", after)
        event.listen(Engine, "handle_error", after)
        self._thread.start()
        try:
            yield self
        finally:
            event.remove(Engine, "before_cursor_execute", before)
            event.remove(Engine, "after_cursor_execute", after)
            event.remove(Engine, "handle_error", after)
            self._stop.set()
            self._thread.join()

    # -- the monitor's thread -------------------------------------------------------------

    def _run(self) -> None:
        tick = self.poll if self.watch_blockers else LONGEST_POLL
        reported: tuple[str, float] | None = None
        next_line = 0.0
        try:
            while not self._stop.wait(tick):
                now = time.monotonic()
                statement = self._statement
                if statement is not None and self.watch_blockers:
                    running_for = now - statement.started
                    if self.poll <= running_for <= self.ddl_lock_timeout + self.poll:
                        self._look(statement)
                running = self.revisions.running()
                if running != reported:
                    reported, next_line = running, (running[1] if running else 0.0)
                    next_line += progress.every_seconds()
                elif running is not None and now >= next_line:
                    next_line += progress.every_seconds()
                    progress.log.info(
                        "still applying %s: %.0fs so far",
                        self.revisions.label(running[0]),
                        now - running[1],
                    )
        finally:
            self._stack.close()

    def _look(self, statement: _Statement) -> None:
        try:
            if self._session is None:
                own = Database(self.db.url, variable=self.db.variable, connect_timeout=5)
                self._stack.callback(own.dispose)
                self._session = self._stack.enter_context(own.connection(autocommit=True))
            backend = self.db.backend
            found = self._session.run(lambda c: backend.lock_blockers(c, statement.session_id))
        except Exception as error:  # who blocks is a nicety: never a failure of the migration
            why = error_line(error, [self.db.url])
            log.debug("could not read who blocks the migration: %s", why)
            return
        if found and statement is self._statement:
            self._seen = (statement.number, found)


def describe(blockers: list[Blocker]) -> str:
    """``blocked by pid 12 (...), pid 14 (...)``, or what is known when nobody was seen."""
    if not blockers:
        return "the blocking session was not seen (it may have ended)"
    return "blocked by " + ", ".join(b.describe() for b in blockers)
