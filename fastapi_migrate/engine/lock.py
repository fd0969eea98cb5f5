"""``migration_lock``: one migrator at a time, across processes and within one.

Session-level locks (PostgreSQL advisory locks, MySQL ``GET_LOCK``, an OS file lock: each
database's own, in ``backends``) die with their connection or process, so a killed migrator never
leaves a lock behind. Waiters poll a non-blocking try-lock on an autocommit connection: no
transaction stays open while waiting.

The other side of a session lock: it dies with its connection even while the migration runs,
when a server, pooler or network closes that connection for being idle. So while the lock is
held a ``LockKeeper`` thread queries it every ``HEARTBEAT_SECONDS`` (the session is never idle;
its idle timeouts are also switched off for it), and ``guarded_commits`` asks the keeper before
every commit of the migration: the lock is either held or the migration does not commit.

Where a session lock cannot be trusted (a pooler in transaction mode, CockroachDB: the
backend's ``session_lock_doubt``), or with ``MIGRATE_LOCK=lease``, the lock is a lease in a
table (``backends.lease``): the keeper renews it, and each commit checks its fence in the
committing transaction itself instead of asking the keeper.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as NoAnswer
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import Engine, event, exc

from ..backends.base import SessionLock
from ..backends.database import Database, DedicatedConnection
from ..backends.lease import LeaseLock
from ..backends.sessions import session_statements
from ..foundation import progress
from ..foundation.errors import ConfigurationError, DatabaseUnavailable, LockLost, LockTimeout
from ..foundation.redaction import error_line
from ..foundation.retry import poll
from ..foundation.settings import LockChoice

log = logging.getLogger("fastapi_migrate")

# Alembic keeps its context in module globals: two migrations in one process must not overlap.
PROCESS_LOCK = threading.Lock()

# A query on the lock's session this often: well under any idle timeout met in practice
# (PostgreSQL's idle_session_timeout and MySQL's wait_timeout are set in seconds at the lowest,
# load balancers drop a flow after 4 minutes), and a lost lock is noticed within a second.
HEARTBEAT_SECONDS = 1.0
# How long a commit waits for the keeper's answer (a trivial query on an open connection)
# before taking the lock for lost.
VERIFY_SECONDS = 10.0


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
    enabled: LockChoice = True,
    ends_when: Callable[[], bool] | None = None,
) -> Iterator[LockKeeper | None]:
    """The process lock plus the database's lock for this version table, kept alive while
    held (the ``LockKeeper``, None when no database lock is taken); ``WaitEnded`` once
    ``ends_when()`` is true while waiting (checked between attempts)."""
    with process_lock(timeout), ExitStack() as stack:
        if not enabled:
            yield None
            return
        backend = db.backend
        # Its own engine: the keeper's thread uses it while the migration uses ``db``'s.
        own = Database(db.url, variable=db.variable, connect_timeout=db.connect_timeout)
        stack.callback(own.dispose)
        # A SQLite lock is a file: opening a connection there would create the database.
        session = (
            stack.enter_context(own.connection(autocommit=True))
            if backend.lock_needs_connection
            else None
        )
        lock = _choose(db, session, enabled, version_table_schema, version_table)
        if isinstance(lock, LeaseLock):  # a lease outlives its session: it may need another
            lock.reopen = lambda: stack.enter_context(own.connection(autocommit=True))
        if lock is None:
            yield None
            return
        stack.callback(lock.close)
        _acquire(db, lock, timeout, ends_when)
        keeper = LockKeeper(lock, db)
        try:
            if session is not None and not isinstance(lock, LeaseLock):
                statements = session_statements(backend.name, 0)
                session.run(lambda c: [c.exec_driver_sql(s) for s in statements])
            with keeper:
                yield keeper
        finally:
            _release_quietly(db, lock, lost=keeper.lost)


class LockKeeper:
    """The lock while a migration holds it: a thread of its own queries it every
    ``HEARTBEAT_SECONDS`` and answers ``verify()``, so that only that thread ever uses the
    lock's connection (an async driver's connection belongs to one event loop)."""

    def __init__(self, lock: SessionLock, db: Database) -> None:
        self.lock = lock
        self.db = db
        self.lost: str | None = None
        self._requests: queue.Queue[Future[str | None] | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, name="fastapi-migrate-lock-keeper", daemon=True
        )

    def __enter__(self) -> LockKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._requests.put(None)
        self._thread.join()

    def verify(self) -> str | None:
        """None while the lock is ours; else why it is not (asked before each commit)."""
        answer: Future[str | None] = Future()
        self._requests.put(answer)
        try:
            return answer.result(timeout=VERIFY_SECONDS)
        except NoAnswer:
            return f"its connection did not answer within {VERIFY_SECONDS:g}s"

    def _run(self) -> None:
        while True:
            try:
                request = self._requests.get(timeout=HEARTBEAT_SECONDS)
            except queue.Empty:
                request = Future()  # a heartbeat: nobody waits for its answer
            if request is None:
                return
            self._probe()
            request.set_result(self.lost)

    def _probe(self) -> None:
        if self.lost is not None:
            return
        try:
            if not self.lock.still_held():
                self.lost = self.lock.not_held()
        except Exception as error:
            self.lost = f"its connection failed: {error_line(error, [self.db.url])}"
        if self.lost is not None:  # the migration raises LockLost, saying what to do
            log.debug("the migration lock was lost while migrating: %s", self.lost)


@contextmanager
def guarded_commits(keeper: LockKeeper | None, transactional_ddl: bool) -> Iterator[None]:
    """Within the block, no commit of this thread's migration happens without the lock.

    Before each commit the keeper is asked. Lost, where DDL is transactional: ``LockLost``
    instead of the commit, so everything since the last commit rolls back. Where each DDL
    statement commits by itself (MySQL): that revision's statements are in already, so its
    version row is committed too (the version table stays true), and ``LockLost`` is raised
    before the next statement, so the next revision never starts. Once the keeper has seen the
    lock lost, the next statement of a transactional migration fails at once.
    """
    if keeper is None:
        yield
        return
    owner = threading.get_ident()
    stopping: list[str] = []
    lease = keeper.lock if isinstance(keeper.lock, LeaseLock) else None

    def before_commit(connection: Any) -> None:
        if threading.get_ident() != owner or stopping:
            return
        lost = keeper.verify() if lease is None else _check_in(lease, connection, keeper.db)
        if lost is None:
            return
        stopping.append(lost)
        if transactional_ddl:
            raise LockLost(lost)

    def before_statement(*_args: Any) -> None:
        if threading.get_ident() != owner:
            return
        if stopping or (transactional_ddl and keeper.lost is not None):
            raise LockLost(stopping[0] if stopping else str(keeper.lost))

    event.listen(Engine, "commit", before_commit)
    event.listen(Engine, "before_cursor_execute", before_statement)
    try:
        yield
    finally:
        event.remove(Engine, "commit", before_commit)
        event.remove(Engine, "before_cursor_execute", before_statement)
    if stopping:  # the block ended without noticing: what it committed last was unguarded
        raise LockLost(stopping[0])


def _check_in(lease: LeaseLock, connection: Any, db: Database) -> str | None:
    """The lease's fence, checked in the transaction about to commit."""
    try:
        return lease.check_in(connection)
    except exc.DBAPIError as error:
        return f"its row could not be checked: {error_line(error, [db.url])}"


def _choose(
    db: Database,
    session: DedicatedConnection | None,
    enabled: LockChoice,
    schema: str | None,
    table: str,
) -> SessionLock | None:
    """The session lock where it can be trusted, else the lease; which one and why is logged
    (at INFO when the lease was chosen for the user, the one case they may not expect)."""
    backend = db.backend
    if session is None:  # a lock file (SQLite): no pooler or stub function can come between
        return backend.session_lock(None, db.url, schema=schema, table=table, variable=db.variable)
    if enabled == "lease":
        why, say = "MIGRATE_LOCK=lease", log.debug
    else:
        try:
            doubt = backend.session_lock_doubt(session, db.url, db.variable)
        except exc.DBAPIError as error:
            raise DatabaseUnavailable(
                f"lost the connection to {db.masked_url} before taking the migration lock: "
                f"{error_line(error, [db.url])}; start again once the database answers"
            ) from None
        if doubt is None:
            lock = backend.session_lock(
                session, db.url, schema=schema, table=table, variable=db.variable
            )
            log.debug("migration lock: the database's session lock, on a connection of its own")
            return lock
        why, say = f"not the session lock: {doubt}; MIGRATE_LOCK=lease says so for good", log.info
    if backend.clock_sql is None:
        raise ConfigurationError(
            f"MIGRATE_LOCK: fastapi-migrate has no lease for {backend.name!r} ({why}); set "
            "MIGRATE_LOCK=false if only one process ever migrates this database"
        )
    lease = LeaseLock(session, backend.clock_sql, schema=schema, version_table=table)
    say("migration lock: %s (%s)", lease.description, why)
    return lease


def _acquire(
    db: Database, lock: SessionLock, timeout: float, ends_when: Callable[[], bool] | None
) -> None:
    began = time.monotonic()
    next_line = [began + progress.every_seconds()]

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
        if time.monotonic() >= next_line[0]:
            next_line[0] += progress.every_seconds()
            progress.log.info(
                "waiting for the migration lock: %.0fs so far (MIGRATE_LOCK_TIMEOUT=%g)%s",
                time.monotonic() - began,
                timeout,
                _holder(lock),
            )
        return None

    def timed_out() -> LockTimeout:
        return LockTimeout(
            f"another process held the migration lock for more than {timeout:g}s "
            f"(MIGRATE_LOCK_TIMEOUT){_holder(lock)}; if it is still migrating, wait or raise "
            "the timeout"
        )

    poll(attempt, timeout, timed_out)


def _holder(lock: SessionLock) -> str:
    try:
        return lock.holder()
    except Exception:  # who holds it is a nicety, never a second error
        return ""


def _release_quietly(db: Database, lock: SessionLock, lost: str | None) -> None:
    """Release the lock; if its connection died, the server already dropped the lock with it,
    and the error must not hide how the migration itself went (nor repeat ``LockLost``)."""
    try:
        lock.release()
    except exc.DBAPIError as error:
        (log.debug if lost is not None else log.warning)(
            "the migration lock's connection was lost (%s); the server released the lock with it",
            error_line(error, [db.url]),
        )
