"""``ddl_lock_timeout``: bound how long a migration's DDL waits for a table lock.

An ``ALTER TABLE`` queued behind a long transaction holds its place in the lock queue, and every
query on that table then waits behind it: one slow report stalls the whole app. With a lock
timeout the migration fails instead (``MigrationFailed`` naming the revision) and can be retried.

The setting is applied to every connection opened in the migrating thread while the block runs:
our own connection, and whatever engine an ``env.py`` (ours or Alembic's stock ones, sync or
``asyncio.run``) creates, without any change to that ``env.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine

from . import backend_for


@contextmanager
def ddl_lock_timeout(seconds: float) -> Iterator[None]:
    """Within the block, connections opened by this thread get the lock wait limit."""
    if seconds <= 0:
        yield
        return
    owner = threading.get_ident()

    def connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        statement = backend_for(dialect.name).lock_timeout_statement(seconds)
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
