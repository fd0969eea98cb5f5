"""PostgreSQL: a session advisory lock that is really ours, ``lock_timeout``, template copies.

The lock is ``pg_try_advisory_lock`` polled on an autocommit connection (a waiter blocked in
``pg_advisory_lock`` deadlocks with ``CREATE INDEX CONCURRENTLY``, and a role's ``lock_timeout``
would kill it). Behind a connection pooler in transaction mode (PgBouncer ``pool_mode =
transaction``, some cloud proxies) every statement may run on another server session: a session
lock taken by one statement stays on a server connection that the pooler then hands to other
clients, and two migrators can both "hold" it. So after ``pg_try_advisory_lock`` succeeds, the
session is marked with a token of ours (a custom setting) and checked: the backend must be the
one that took the lock, it must appear in ``pg_locks`` holding the key, and no other client's
token may be on it. Anything else is a ``ConfigurationError``: point the URL at the server, or at
a session pool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, exc, pool, text
from sqlalchemy.engine import URL

from ..foundation.errors import ConfigurationError
from ..foundation.identifiers import IDENTIFIER_LIMITS
from . import postgresql_reset as reset
from .base import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    PREFIX,
    Backend,
    Blocker,
    DatabaseServer,
    Failure,
    ServerWithAdmin,
    Session,
    SessionLock,
    enable_keepalive,
)
from .drivers import sync_url
from .postgresql_reset import Snapshot

log = logging.getLogger("fastapi_migrate")

_NAMESPACE = "fastapi_migrate"


def advisory_key(schema: str | None, version_table: str) -> int:
    """A stable signed 64-bit key (never Python's salted ``hash()``) for the version table."""
    digest = hashlib.sha256(f"{_NAMESPACE}:{schema or ''}.{version_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


OWNER_SETTING = "fastapi_migrate.lock_owner"

_TRY = text(
    "SELECT pg_try_advisory_lock(:k), pg_backend_pid(), current_setting(:s, true)"
).bindparams(s=OWNER_SETTING)
_MARK = text("SELECT set_config(:s, :t, false)").bindparams(s=OWNER_SETTING)
_CHECK = text(
    "SELECT pg_backend_pid(), current_setting(:s, true), EXISTS (SELECT 1 FROM pg_locks "
    "WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() "
    "AND classid = :hi AND objid = :lo AND objsubid = 1)"
).bindparams(s=OWNER_SETTING)
_UNLOCK = text("SELECT pg_advisory_unlock(:k), set_config(:s, '', false)").bindparams(
    s=OWNER_SETTING
)


@dataclass(frozen=True)
class AdvisoryHold:
    """The key, the server session (backend pid) that holds it, and our token on that session."""

    key: int
    pid: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


def _key_parts(key: int) -> dict[str, int]:
    """How ``pg_locks`` shows a bigint key: high and low 32 bits as ``classid`` / ``objid``."""
    return {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}


def _pooled(variable: str, detail: str) -> ConfigurationError:
    return ConfigurationError(
        f"the migration lock would not be safe: {detail}. {variable} seems to go through a "
        "connection pooler in transaction mode (PgBouncer pool_mode=transaction, a proxy), "
        "where a session advisory lock leaks to other clients; point it at the PostgreSQL "
        "server itself, or at a pool in session mode, or set MIGRATE_LOCK=lease (a lease in a "
        "table, which works through any pooler)"
    )


def try_advisory_lock(conn: Connection, key: int, variable: str) -> AdvisoryHold | None:
    """Take the lock if free and verify we own it; ``None`` if another session holds it."""
    got, pid, previous = conn.execute(_TRY, {"k": key}).one()
    if not got:
        return None
    hold = AdvisoryHold(key, int(pid))
    if previous:
        # Reentrant success on a session that another client marked: the session is shared.
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        raise _pooled(
            variable,
            f"PostgreSQL session {pid} already holds it for another client ({previous})",
        )
    conn.execute(_MARK, {"t": hold.token})
    verify_owner(conn, hold, variable)
    return hold


def verify_owner(conn: Connection, hold: AdvisoryHold, variable: str) -> None:
    """Raise ``ConfigurationError`` unless this statement runs on the session holding the key."""
    pid, token, holds = conn.execute(_CHECK, _key_parts(hold.key)).one()
    if pid != hold.pid:
        detail = f"PostgreSQL session {hold.pid} took it, the next statement ran on {pid}"
    elif token != hold.token or not holds:
        detail = f"PostgreSQL session {pid} does not hold it for this client"
    else:
        return
    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": hold.key})  # best effort
    raise _pooled(variable, detail)


def release(conn: Connection, hold: AdvisoryHold) -> None:
    """Unlock; a lock that is already gone (its session ended) is only worth a warning."""
    released = conn.execute(_UNLOCK, {"k": hold.key}).scalar()
    if not released:  # the migration already said why (LockLost), or the session was reset
        log.debug(
            "the migration lock was no longer held by PostgreSQL session %s when released",
            hold.pid,
        )


_HOLDER = text(
    "SELECT a.pid, a.application_name, a.client_addr, a.state, now() - a.backend_start "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
)
# Who a waiting session waits for (pg_blocking_pids): identity and state, never query text.
_BLOCKERS = text(
    "SELECT a.pid, a.application_name, a.state, EXTRACT(EPOCH FROM now() - a.xact_start) "
    "FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(:pid)) ORDER BY a.pid"
)
_INVALID_INDEXES = text(
    "SELECT n.nspname || '.' || c.relname FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE NOT i.indisvalid ORDER BY 1"
)


_STILL_HELD = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND classid = :hi AND objid = :lo AND objsubid = 1)"
)


class AdvisoryLock(SessionLock):
    """The version table's advisory lock on one kept autocommit session."""

    def __init__(self, session: Session, key: int, variable: str) -> None:
        self.session = session
        self.key = key
        self.variable = variable
        self.hold: AdvisoryHold | None = None

    def try_acquire(self) -> bool:
        self.hold = self.session.run(lambda c: try_advisory_lock(c, self.key, self.variable))
        return self.hold is not None

    def release(self) -> None:
        hold = self.hold
        if hold is not None:
            self.session.run(lambda c: release(c, hold))

    def still_held(self) -> bool:
        return bool(
            self.session.run(lambda c: c.execute(_STILL_HELD, _key_parts(self.key)).scalar())
        )

    def holder(self) -> str:
        row = self.session.run(lambda c: c.execute(_HOLDER, _key_parts(self.key)).first())
        if row is None:
            return ""
        return (
            f"; held by PostgreSQL backend pid {row[0]} (application {row[1] or '?'}, client "
            f"{row[2] or 'local'}, state {row[3]}, connected {row[4]})"
        )


# libpq tries each address of a host in turn and reports one "connection to server ... failed:"
# per address: every one of them must be worth waiting for.
_ONE_ADDRESS = re.compile(r"connection to server (?:at|on) [^\n]*?failed:")


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


_SERVER = text("SELECT version(), current_setting('port')")

# Hosts of managed poolers in transaction mode that listen on the server's own port.
_POOLER_HOSTS = (
    ("-pooler.", "a Neon pooled endpoint"),
    (".proxy-", "an RDS Proxy endpoint"),
)


def client_port(conn: Connection, url: URL) -> int | None:
    """The port this connection reached: the driver's own answer where it has one (psycopg,
    psycopg2), else the URL's (``port=`` in the query for a unix socket), else libpq's 5432."""
    dbapi = conn.connection.dbapi_connection
    port = getattr(getattr(dbapi, "info", None), "port", None)
    if isinstance(port, int):
        return port
    given: Any = url.port or url.query.get("port") or os.environ.get("PGPORT") or 5432
    if isinstance(given, tuple):
        given = given[0] if len(given) == 1 else None
    try:
        return int(given)
    except (TypeError, ValueError):
        return None


def lock_doubt(conn: Connection, url: URL, variable: str) -> str | None:
    """Why a session advisory lock would not hold on this connection, where it can be told
    from the server and the URL: CockroachDB (its advisory functions lock nothing), a port
    other than the server's (a pooler or proxy in between), a known pooler's host name."""
    version, server_port = conn.execute(_SERVER).one()
    if "cockroachdb" in str(version).lower():
        return "the server says it is CockroachDB, whose advisory locks lock nothing"
    reached = client_port(conn, url)
    if reached is not None and str(reached) != str(server_port):
        return (
            f"{variable} reaches port {reached} and the server listens on {server_port}: "
            "something is in between (a connection pooler such as PgBouncer, or a proxy), "
            "where a session lock may not stay with this client"
        )
    host = (url.host or "").lower()
    for marker, what in _POOLER_HOSTS:
        if marker in host:
            return f"{variable}'s host looks like {what}, a pooler in transaction mode"
    return None


class PostgreSQL(Backend):
    max_identifier_length = IDENTIFIER_LIMITS["postgresql"]
    transient_messages = (
        *Backend.transient_messages,
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "the database system is not yet accepting connections",
        "the database system is not accepting connections",
        "remaining connection slots are reserved",
        "could not translate host name",
        "server closed the connection unexpectedly",
        "could not receive data from server",
        "could not send data to server",
        "terminating connection due to administrator command",
        "cannotconnectnow",  # asyncpg's class for "starting up", in case its text differs
    )

    def driver_error_heals(self, error: BaseException) -> bool:
        if type(error).__name__ in ("CannotConnectNowError", "TooManyConnectionsError"):
            return True  # asyncpg's own classes
        text = str(error).lower()
        parts = [part for part in _ONE_ADDRESS.split(text)[1:] if part.strip()] or [text]
        return all(any(m in part for m in self.transient_messages) for part in parts)

    # Seconds since the epoch by the server's clock at the moment of the statement.
    clock_sql = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"

    def session_lock_doubt(self, session: Session | None, url: URL, variable: str) -> str | None:
        assert session is not None
        return session.run(lambda c: lock_doubt(c, url, variable))

    def session_lock(
        self, session: Session | None, url: URL, *, schema: str | None, table: str, variable: str
    ) -> SessionLock | None:
        assert session is not None
        return AdvisoryLock(session, advisory_key(schema, table), variable)

    session_id_statement = "SELECT pg_backend_pid()"

    def lock_blockers(self, connection: Connection, session_id: int) -> list[Blocker]:
        rows = connection.execute(_BLOCKERS, {"pid": session_id}).all()
        return [Blocker(int(r[0]), str(r[1] or ""), str(r[2] or ""), _seconds(r[3])) for r in rows]

    def lock_timeout_statement(self, seconds: float) -> str | None:
        return f"SET lock_timeout = {max(1, round(seconds * 1000))}" if seconds > 0 else None

    def keep_alive_statements(self) -> list[str]:
        # idle_session_timeout exists from PostgreSQL 14 on: set only where the server has it.
        return [
            "SELECT set_config('idle_session_timeout', '0', false) "
            "WHERE current_setting('server_version_num')::int >= 140000",
            "SET idle_in_transaction_session_timeout = 0",
        ]

    def connect_params(self, driver: str, params: dict[str, Any]) -> None:
        if driver == "psycopg":
            # No server-side prepared statements (psycopg 3 prepares a query run 5 times): a
            # pooler in transaction mode lends another server session, where the name is taken.
            params.setdefault("prepare_threshold", None)
        if driver in ("psycopg", "psycopg2"):  # libpq's own keepalive parameters
            params.setdefault("keepalives", 1)
            params.setdefault("keepalives_idle", KEEPALIVE_IDLE)
            params.setdefault("keepalives_interval", KEEPALIVE_INTERVAL)
            params.setdefault("keepalives_count", KEEPALIVE_COUNT)

    def connected(self, dbapi_connection: Any) -> None:
        enable_keepalive(dbapi_connection)  # asyncpg: on its socket

    def failure_hint(self, failure: Failure, session: Session) -> str:
        """A failed ``CREATE INDEX CONCURRENTLY`` (in an autocommit block) leaves an INVALID
        index that a retry trips over, or, with ``IF NOT EXISTS``, silently keeps."""
        if not failure.autocommit_block:
            return ""
        try:
            invalid = session.run(lambda c: [str(r[0]) for r in c.execute(_INVALID_INDEXES)])
        except Exception:  # a hint is never worth a second error
            return ""
        if not invalid:
            return ""
        return (
            f"; INVALID index(es), as a failed CREATE INDEX CONCURRENTLY leaves: "
            f"{', '.join(invalid)} (DROP INDEX CONCURRENTLY before starting again)"
        )

    def test_server(self, url: URL, directory: Path) -> DatabaseServer:
        return PostgresServer(url)


_READY = "fastapi-migrate template, ready: "


class PostgresServer(ServerWithAdmin):
    """``CREATE DATABASE ... TEMPLATE``: PostgreSQL copies the files, whatever the schema."""

    _hold_sql = "SELECT pg_try_advisory_lock(:k)"
    _let_go_sql = "SELECT pg_advisory_unlock(:k)"

    def _hold_key(self, name: str) -> object:
        digest = hashlib.sha256(f"hold {name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def __init__(self, url: URL) -> None:
        super().__init__(url, pool.QueuePool)  # one admin session kept for the whole run
        self._resetters: dict[str, Engine] = {}
        """Per reused database: one session kept for its resets (a new one costs PostgreSQL a
        process: 8 to 20 ms here)."""

    def create(self, name: str) -> str:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self._quote(name)}")
        return self.url(name)

    def prepare_template(self, name: str) -> None:
        # PostgreSQL refuses to copy a database anyone is connected to: lock the door, then end
        # whatever a migration's env.py may have left connected.
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {self._quote(name)} WITH ALLOW_CONNECTIONS false")
            reset.end_sessions(conn, name)

    def copy(self, template: str, name: str) -> str:
        with self._admin.connect() as conn:
            try:
                conn.exec_driver_sql(
                    f"CREATE DATABASE {self._quote(name)} TEMPLATE {self._quote(template)}"
                )
                # A test's commit need not wait for the disk (a copy does not inherit settings).
                conn.exec_driver_sql(
                    f"ALTER DATABASE {self._quote(name)} SET synchronous_commit = off"
                )
            except exc.OperationalError as error:
                if "being accessed by other users" not in str(error):
                    raise
                raise ConfigurationError(
                    f"PostgreSQL cannot copy the template database {template}: a connection is "
                    f"still open on it ({self._sessions_on(conn, template)})"
                ) from None
        return self.url(name)

    @staticmethod
    def _sessions_on(conn: Connection, name: str) -> str:
        rows = conn.execute(
            text("SELECT pid, application_name, state FROM pg_stat_activity WHERE datname = :name"),
            {"name": name},
        ).all()
        return ", ".join(f"pid {r[0]} {r[1]!r} {r[2]}" for r in rows) or "it closed since"

    def drop(self, name: str) -> None:
        resetter = self._resetters.pop(name, None)
        if resetter is not None:
            resetter.dispose()
        with self._admin.connect() as conn:
            if (conn.dialect.server_version_info or (0,)) >= (13,):
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(name)} WITH (FORCE)")
                return
            reset.end_sessions(conn, name)
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(name)}")

    def _snapshot(self, name: str) -> Snapshot:
        with self.connect_to(name) as conn:
            return reset.snapshot(conn)

    def _restore(self, name: str, fresh: object, known: object | None) -> object | None:
        assert isinstance(fresh, Snapshot)
        if name not in self._resetters:
            self._resetters[name] = create_engine(
                sync_url(self.url(name)), poolclass=pool.QueuePool, pool_size=1
            )
        try:
            with self._resetters[name].connect() as conn:
                proven = known if isinstance(known, reset.Proven) else None
                return reset.restore(conn, name, fresh, proven)
        except BaseException:
            self._resetters.pop(name).dispose()  # its session may be the one that failed
            raise

    def let_go(self, name: str) -> None:
        resetter = self._resetters.pop(name, None)
        if resetter is not None:
            resetter.dispose()
        super().let_go(name)

    def close(self) -> None:
        for resetter in self._resetters.values():
            resetter.dispose()
        self._resetters.clear()
        super().close()

    def identity(self) -> str:
        with self._admin.connect() as conn:
            return f"postgresql {conn.dialect.server_version_info}"

    @contextmanager
    def build_lock(self, name: str) -> Iterator[None]:
        # A session advisory lock on a connection of its own: the server frees it if we die.
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._admin.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    def publish(self, building: str, final: str, mark: str) -> None:
        # The mark goes on first and survives the rename: the name appears already marked.
        q = self._quote
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"COMMENT ON DATABASE {q(building)} IS '{_READY}{mark}'")
            self.drop(final)
            conn.exec_driver_sql(f"ALTER DATABASE {q(building)} RENAME TO {q(final)}")

    def ready_mark(self, name: str) -> str | None:
        with self._admin.connect() as conn:
            comment = conn.execute(
                text(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                    "WHERE datname = :n"
                ),
                {"n": name},
            ).scalar()
        if not comment or not str(comment).startswith(_READY):
            return None
        return str(comment)[len(_READY) :]

    def names(self) -> list[str]:
        with self._admin.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE :p ORDER BY 1"),
                    {"p": PREFIX.replace("_", r"\_") + "%"},
                ).scalars()
            )
