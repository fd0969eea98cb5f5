"""``LeaseLock``: the migration lock as a row in a table, where a session lock cannot be trusted.

A session lock (advisory lock, ``GET_LOCK``) lives on one server session. Through a pooler in
transaction mode there is no session of ours to keep it on, and CockroachDB's advisory locks
lock nothing. A lease needs only a table and ordinary transactions, each whole and committed at
once (no transaction stays open while migrating, so ``CREATE INDEX CONCURRENTLY`` still runs):

- one row per lock key (the version table's schema and name) in ``fastapi_migrate_lock``,
  beside the version table: its ``owner``, a ``fence`` number that grows on every take-over,
  and ``expires_at`` in the database's own clock (seconds since the epoch: no client clock and
  no time zone is trusted);
- taken when free or expired, renewed by the keeper every second (``LEASE_SECONDS`` of 10 s
  is ten renewals away), given back at the end; a holder killed with ``kill -9`` stops
  renewing, and a waiter takes over once it expired;
- every commit of the migration first locks the row in its own transaction and checks that
  the fence is still ours (``check_in``): a holder that lost the lease (paused past its expiry,
  cut off) and was taken over commits nothing more, and a take-over waits for a commit under
  way instead of racing it.

The table is created by whichever process needs it first (``CREATE TABLE IF NOT EXISTS``, and a
creation that lost a race to another process is checked, not fatal).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    MetaData,
    String,
    Table,
    exc,
    literal_column,
    select,
    update,
)
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.elements import ColumnElement

from .base import Session, SessionLock

T = TypeVar("T")

LEASE_TABLE = "fastapi_migrate_lock"
"""The lease table's name, in the version table's schema; never one of the app's tables."""

LEASE_SECONDS = 10.0
"""How long a lease lasts unless renewed: a killed holder's lease is taken over this long after
its last renewal (plus a waiter's poll interval, half a second at most)."""


def lease_table(schema: str | None) -> Table:
    """The lease table's definition, in ``schema`` (None: the connection's default)."""
    return Table(
        LEASE_TABLE,
        MetaData(schema=schema),
        Column("lock_key", String(200), primary_key=True),
        Column("owner", String(200), nullable=True),
        Column("fence", BigInteger, nullable=False),
        Column("expires_at", Double, nullable=False),
    )


def lease_key(schema: str | None, version_table: str) -> str:
    """The lock's row: the version table it guards."""
    return f"{schema or ''}.{version_table}"


# Errors that mean "another transaction got there first, try again": serialization failures
# (CockroachDB, SERIALIZABLE), deadlocks (MySQL 1213), lock waits (MySQL 1205).
_CONTENDED_STATES = {"40001", "40P01"}
_CONTENDED_NUMBERS = {1205, 1213}


def contended(error: exc.DBAPIError) -> bool:
    """Whether ``error`` is a concurrency conflict rather than a broken connection."""
    original: Any = error.orig
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    args = getattr(original, "args", ())
    number = args[0] if args and isinstance(args[0], int) else None
    return state in _CONTENDED_STATES or number in _CONTENDED_NUMBERS


class LeaseLock(SessionLock):
    """The lease row of one lock key, taken, renewed and given back by short transactions on
    one autocommit session (each statement its own committed transaction)."""

    description = "a lease in the table " + LEASE_TABLE

    def __init__(
        self,
        session: Session,
        clock: str,
        *,
        schema: str | None,
        version_table: str,
        seconds: float = LEASE_SECONDS,
        reopen: Callable[[], Session] | None = None,
    ) -> None:
        self.session = session
        self.reopen = reopen
        self.table = lease_table(schema)
        self.key = lease_key(schema, version_table)
        self.seconds = seconds
        self.owner = f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.fence: int | None = None
        self._now: ColumnElement[Any] = literal_column(clock, Double)
        self._ready = False

    def _row(self) -> Any:
        return self.table.c.lock_key == self.key

    def _ours(self) -> Any:
        t = self.table
        return self._row() & (t.c.owner == self.owner) & (t.c.fence == self.fence)

    def _has_row(self) -> bool:
        query = select(self.table.c.fence).where(self._row())
        return self.session.run(lambda c: c.execute(query).first()) is not None

    def prepare(self) -> None:
        """The table and this key's row, made by the first process that needs them."""
        if self._ready:
            return
        t = self.table
        try:
            exists = self._has_row()
        except exc.DBAPIError:  # no table yet
            try:
                self.session.run(lambda c: c.execute(CreateTable(t, if_not_exists=True)))
            except exc.DBAPIError:  # another process created it at the same moment
                self.session.run(lambda c: c.execute(select(t.c.fence).limit(1)).all())
            exists = False
        if not exists:
            row = {"lock_key": self.key, "owner": None, "fence": 0, "expires_at": 0.0}
            try:
                self.session.run(lambda c: c.execute(t.insert().values(**row)))
            except exc.DBAPIError:  # another process inserted it first, or the error is real
                if not self._has_row():
                    raise
        self._ready = True

    def try_acquire(self) -> bool:
        self.prepare()
        t = self.table
        take = (
            update(t)
            .where(self._row() & (t.c.owner.is_(None) | (t.c.expires_at < self._now)))
            .values(owner=self.owner, fence=t.c.fence + 1, expires_at=self._now + self.seconds)
        )
        try:
            taken = self.session.run(lambda c: c.execute(take).rowcount)
        except exc.DBAPIError as error:
            if contended(error):
                return False
            raise
        if taken != 1:
            return False
        fence = self.session.run(
            lambda c: c.execute(
                select(t.c.fence).where(self._row() & (t.c.owner == self.owner))
            ).scalar()
        )
        self.fence = None if fence is None else int(fence)
        return self.fence is not None

    def still_held(self) -> bool:
        """Renew: the lease is ours for ``seconds`` more, unless someone took it over."""
        if self.fence is None:
            return False
        renew = update(self.table).where(self._ours()).values(expires_at=self._now + self.seconds)
        try:
            return bool(self._run(lambda c: c.execute(renew).rowcount) == 1)
        except exc.DBAPIError as error:
            if contended(error):  # a commit of ours holds the row: renewed next time
                return True
            raise

    def _run(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` on the lease's session; if that session died (an idle timeout, a pooler or
        network that closed it), once more on a new one: the lease lives in its row, not on
        a connection."""
        try:
            return self.session.run(fn)
        except exc.DBAPIError as error:
            if self.reopen is None or contended(error) or not error.connection_invalidated:
                raise
        self.session = self.reopen()
        return self.session.run(fn)

    def not_held(self) -> str:
        return (
            f"its lease in {LEASE_TABLE} was taken over by another process (not renewed within "
            f"{self.seconds:g}s)"
        )

    def release(self) -> None:
        if self.fence is None:
            return
        free = update(self.table).where(self._ours()).values(owner=None, expires_at=0.0)
        self._run(lambda c: c.execute(free))
        self.fence = None

    def check_in(self, connection: Connection) -> str | None:
        """In the transaction about to commit on ``connection``: lock the row and check that
        the fence is still ours. None if it is; else why not (the commit must not happen)."""
        t = self.table
        query = select(t.c.owner, t.c.fence).where(self._row()).with_for_update()
        row = connection.execute(query).first()
        if row is not None and row[0] == self.owner and row[1] == self.fence:
            return None
        if row is None:
            return f"its row in {LEASE_TABLE} is gone"
        return (
            f"its lease (fence {self.fence}) expired and was taken over by {row[0] or 'nobody'}"
            f" (fence {row[1]}): this process did not renew it for {self.seconds:g}s"
        )

    def holder(self) -> str:
        t = self.table
        row = self.session.run(
            lambda c: c.execute(
                select(t.c.owner, t.c.fence, t.c.expires_at - self._now).where(self._row())
            ).first()
        )
        if row is None or row[0] is None:
            return ""
        return f"; held by {row[0]} (fence {row[1]}, lease ends in {float(row[2]):.1f}s)"
