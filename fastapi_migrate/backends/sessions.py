"""``migration_sessions``: every connection a migration opens gets the session it needs.

Applied to every connection opened in the migrating thread while the block runs: our own, and
whatever engine an ``env.py`` (ours or Alembic's stock ones, sync or ``asyncio.run``) creates,
without any change to that ``env.py``:

- a DDL lock timeout (``MIGRATE_DDL_LOCK_TIMEOUT``): an ``ALTER TABLE`` queued behind a long
  transaction holds its place in the lock queue, and every query on that table then waits
  behind it; with a timeout the migration fails instead (``MigrationFailed`` naming the
  revision) and can be retried;
- no idle timeout (PostgreSQL ``idle_session_timeout``, MySQL ``wait_timeout``): a revision
  that computes for a while must not lose its session;
- TCP keepalives, so that no load balancer or NAT drops a quiet connection.

Each such connection also notes its server session id (``SESSION_ID`` in the connection's
``info``), so that who blocks one of its statements can be asked while it waits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine

from . import backend_for

SESSION_ID = "fastapi_migrate.session_id"
"""Key of the server session id in a migration connection's ``Connection.info``."""

# Where the pool record has no ``info`` (some async dialects connect once without a real
# record): the session ids by DBAPI connection, for as long as ``migration_sessions`` runs.
_BY_CONNECTION: dict[int, int] = {}


def session_id_of(connection: Any) -> int | None:
    """The server session id of a migration's ``Connection``, if it noted one."""
    try:
        found = connection.info.get(SESSION_ID)
        if found is None:
            found = _BY_CONNECTION.get(id(connection.connection.dbapi_connection))
    except Exception:  # a closed or invalidated connection: not known
        return None
    return found if isinstance(found, int) else None


def session_statements(dialect: str, ddl_lock_timeout: float) -> list[str]:
    """What a migration's session runs first, on this database."""
    backend = backend_for(dialect)
    timeout = backend.lock_timeout_statement(ddl_lock_timeout)
    return ([timeout] if timeout else []) + backend.keep_alive_statements()


@contextmanager
def migration_sessions(ddl_lock_timeout: float) -> Iterator[None]:
    """Within the block, connections opened by this thread get the migration's session."""
    owner = threading.get_ident()

    def connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        if threading.get_ident() != owner:
            return None  # SQLAlchemy connects as usual
        backend = backend_for(dialect.name)
        backend.connect_params(dialect.driver, cparams)
        connection = dialect.connect(*cargs, **cparams)
        backend.connected(connection)
        statements = session_statements(dialect.name, ddl_lock_timeout)
        if statements or backend.session_id_statement:
            cursor = connection.cursor()
            try:
                for statement in statements:
                    cursor.execute(statement)
                if backend.session_id_statement:
                    cursor.execute(backend.session_id_statement)
                    row = cursor.fetchone()
                    if row:
                        _note(_record, connection, int(row[0]))
            finally:
                cursor.close()
            connection.commit()  # a session setting made in a transaction is lost on rollback
        return connection

    event.listen(Engine, "do_connect", connect)
    try:
        yield
    finally:
        event.remove(Engine, "do_connect", connect)
        _BY_CONNECTION.clear()


def _note(record: Any, connection: Any, session_id: int) -> None:
    try:
        record.info[SESSION_ID] = session_id
    except (AttributeError, NotImplementedError):
        _BY_CONNECTION[id(connection)] = session_id
