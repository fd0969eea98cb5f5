"""MySQL and MariaDB: ``GET_LOCK``, ``lock_wait_timeout``, half-applied revisions, copies.

MySQL and MariaDB commit every DDL statement, so a migrator killed inside a revision leaves
that revision's first statements in place while the version table still names the revision
before it. The next start runs the revision again and its first statement fails because its
object already exists: that combination (the first revision of this start, failing on an object
that already exists) is recognized here, to say what happened and what to do.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc, pool, text
from sqlalchemy.engine import URL

from ..foundation.errors import ConfigurationError
from ..foundation.identifiers import IDENTIFIER_LIMITS
from . import mysql_reset as reset
from .base import (
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

_NAMESPACE = "fastapi_migrate"


def lock_name(database: str | None, schema: str | None, version_table: str) -> str:
    """A stable name of at most 64 characters (MySQL's limit; names are server-wide)."""
    base = f"{_NAMESPACE}:{database or ''}.{schema or ''}.{version_table}"
    if len(base) <= 64:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:20]
    return f"{_NAMESPACE}:{digest}:{version_table}"[:64]


class NamedLock(SessionLock):
    """``GET_LOCK(name, 0)`` on one kept autocommit session."""

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name

    def try_acquire(self) -> bool:
        got = self.session.run(
            lambda c: c.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self.name}).scalar()
        )
        return bool(got == 1)

    def release(self) -> None:
        self.session.run(lambda c: c.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name}))

    def still_held(self) -> bool:
        held = self.session.run(
            lambda c: c.execute(
                text("SELECT IS_USED_LOCK(:n) = CONNECTION_ID()"), {"n": self.name}
            ).scalar()
        )
        return bool(held)

    def holder(self) -> str:
        row = self.session.run(
            lambda c: c.execute(
                text(
                    "SELECT p.ID, p.USER, p.HOST, p.TIME FROM information_schema.PROCESSLIST p "
                    "WHERE p.ID = IS_USED_LOCK(:n)"
                ),
                {"n": self.name},
            ).first()
        )
        if row is None:
            return ""
        return f"; held by connection {row[0]} ({row[1]}@{row[2]}, busy {row[3]}s)"


# Client and server error numbers of a failed connection that waiting may fix.
_TRANSIENT_CONNECT = {
    1040,  # ER_CON_COUNT_ERROR: too many connections
    1053,  # ER_SERVER_SHUTDOWN
    1203,  # ER_TOO_MANY_USER_CONNECTIONS
    2002,  # CR_CONNECTION_ERROR: the local socket is not there (yet)
    2003,  # CR_CONN_HOST_ERROR: refused, timed out, no such host (yet)
    2005,  # CR_UNKNOWN_HOST
    2006,  # CR_SERVER_GONE_ERROR
    2013,  # CR_SERVER_LOST
}
# Without performance_schema or the metadata_lock_info plugin the server does not say who holds
# a table's metadata lock: these are the sessions of this database with a transaction open,
# which is what holds one (identity and state, never query text).
_OPEN_TRANSACTIONS = text(
    "SELECT p.ID, p.USER, p.HOST, p.COMMAND, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) "
    "FROM information_schema.INNODB_TRX t "
    "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
    "WHERE p.ID <> :pid AND p.DB = DATABASE() ORDER BY p.ID"
)


class MySQL(Backend):
    transactional_ddl = False  # every DDL statement commits by itself
    max_identifier_length = IDENTIFIER_LIMITS["mysql"]

    def check_url(self, url: URL, variable: str) -> None:
        """PyMySQL (and aiomysql, which uses its tables) fails on an unknown ``?charset=``
        with an ``AttributeError`` at the first connect."""
        charset = url.query.get("charset")
        if not isinstance(charset, str) or url.get_driver_name() not in ("pymysql", "aiomysql"):
            return
        try:
            charsets = importlib.import_module("pymysql.charset")  # no type stubs
        except ImportError:
            return  # the driver's own error says it is missing
        if charsets.charset_by_name(charset) is None:
            raise ConfigurationError(
                f"{variable}: ?charset={charset} is not a character set PyMySQL knows; use "
                "e.g. ?charset=utf8mb4"
            )

    def driver_error_heals(self, error: BaseException) -> bool:
        number = _mysql_error_number(error)
        if number is not None:
            return number in _TRANSIENT_CONNECT
        return super().driver_error_heals(error)

    # Seconds since the epoch by the server's clock, to the microsecond.
    clock_sql = "UNIX_TIMESTAMP(NOW(6))"

    def session_lock(
        self, session: Session | None, url: URL, *, schema: str | None, table: str, variable: str
    ) -> SessionLock | None:
        assert session is not None
        return NamedLock(session, lock_name(url.database, schema, table))

    session_id_statement = "SELECT CONNECTION_ID()"

    def lock_blockers(self, connection: Connection, session_id: int) -> list[Blocker]:
        rows = connection.execute(_OPEN_TRANSACTIONS, {"pid": session_id}).all()
        return [
            Blocker(int(r[0]), f"{r[1]}@{r[2]}", str(r[3] or ""), float(r[4] or 0)) for r in rows
        ]

    def lock_timeout_statement(self, seconds: float) -> str | None:
        # Metadata locks (what ALTER TABLE waits for) and InnoDB row locks (what raw UPDATEs in a
        # revision wait for); whole seconds, at least 1.
        if seconds <= 0:
            return None
        whole = max(1, math.ceil(seconds))
        return f"SET SESSION lock_wait_timeout = {whole}, innodb_lock_wait_timeout = {whole}"

    def keep_alive_statements(self) -> list[str]:
        # A year, the most the server takes: the session outlives any migration.
        return [
            "SET SESSION wait_timeout = 31536000",
            "SET SESSION interactive_timeout = 31536000",
        ]

    def connected(self, dbapi_connection: Any) -> None:
        enable_keepalive(dbapi_connection)  # PyMySQL and aiomysql take no parameter for it

    def failure_hint(self, failure: Failure, session: Session) -> str:
        earlier = _half_applied_earlier(failure)
        if earlier is not None:
            return earlier
        if failure.revision is None and not failure.what.startswith("MIGRATE_EMPTY_DATABASE"):
            return ""
        return (
            f"; MySQL/MariaDB commit each DDL statement, so {failure.what} may be "
            "half-applied: undo or finish its statements by hand, then start again"
        )

    def test_server(self, url: URL, directory: Path) -> DatabaseServer:
        return MysqlServer(url)


# MySQL/MariaDB error numbers for "it is already there" (or, for a DROP, "already gone").
_ALREADY_DONE = {
    1050,  # ER_TABLE_EXISTS_ERROR
    1051,  # ER_BAD_TABLE_ERROR (DROP TABLE of a table already dropped)
    1060,  # ER_DUP_FIELDNAME
    1061,  # ER_DUP_KEYNAME
    1068,  # ER_MULTIPLE_PRI_KEY
    1091,  # ER_CANT_DROP_FIELD_OR_KEY
    1826,  # ER_FK_DUP_NAME
}


def _mysql_error_number(error: BaseException) -> int | None:
    """The server's error number of a DBAPI error (SQLAlchemy wraps it in ``.orig``)."""
    original = getattr(error, "orig", None) or error
    args = getattr(original, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _half_applied_earlier(failure: Failure) -> str | None:
    """The hint for a revision an earlier start left half-applied, or ``None``."""
    failed = failure.revision
    if failed is None or failed != failure.first_pending:
        return None
    if _mysql_error_number(failure.error) not in _ALREADY_DONE:
        return None
    before = failure.left_at or "no revision"
    return (
        f"; revision {failed} looks half-applied by an earlier start that stopped inside it "
        "(MySQL/MariaDB commit each DDL statement, so its first statements stayed while the "
        f"version table still says {before}): undo what it did, then start again; or finish "
        f"its remaining statements by hand and run `fastapi-migrate stamp {failed}`"
    )


@dataclass
class _MysqlTemplate:
    """What a copy replays: the template's DDL, its seeded tables, its views and triggers."""

    create_database: str
    tables: list[str] = field(default_factory=list)
    rows: list[tuple[str, str | None]] = field(default_factory=list)  # (table, columns)
    views: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)


# Statements that commit the transaction around them ("implicit commit" in the manuals);
# CREATE TEMPORARY TABLE does not, but replacing the database once too often is only slower.
_IMPLICIT_COMMIT = re.compile(
    r"\s*(ALTER|CREATE|DROP|RENAME|TRUNCATE|GRANT|REVOKE|LOCK\s+TABLES|UNLOCK\s+TABLES|"
    r"START\s+TRANSACTION|BEGIN|SET\s+AUTOCOMMIT|ANALYZE|OPTIMIZE|REPAIR|LOAD\s+DATA|FLUSH)\b",
    re.IGNORECASE,
)


_MARKER = "fmpt_template_ready"
"""The table that marks a kept template as complete; never copied."""


def _tls_attempt_is_useless(url: URL) -> bool:
    """Whether the blocking driver is PyMySQL, the URL asks nothing of TLS, and the server
    offers none: PyMySQL (2.2) then still builds an SSL context for every connection (loading
    the system's CA certificates: 80 ms here, more than the connection itself) before falling
    back to plain TCP, which ``ssl_disabled`` goes to at once."""
    blocking = sync_url(url)
    if blocking.get_driver_name() != "pymysql" or any(k.startswith("ssl") for k in url.query):
        return False
    probe = create_engine(blocking, poolclass=pool.NullPool, connect_args={"ssl_disabled": True})
    try:
        with probe.connect() as conn:
            offered = conn.exec_driver_sql("SELECT @@have_ssl").scalar()
    except exc.DBAPIError:  # TLS required, or no such variable (MySQL 8.4): leave it as it is
        return False
    finally:
        probe.dispose()
    return str(offered).upper() != "YES"


class MysqlServer(ServerWithAdmin):
    """MySQL/MariaDB: replay ``SHOW CREATE TABLE`` (with foreign keys and indexes), copy the
    rows migrations inserted, then views and triggers.

    ``CREATE TABLE ... LIKE`` was measured slower and drops foreign keys; both cost a few
    milliseconds per table, so a copy's cost follows the number of tables, not of revisions.
    """

    _hold_sql = "SELECT GET_LOCK(:k, 0)"
    _let_go_sql = "SELECT RELEASE_LOCK(:k)"

    def __init__(self, url: URL) -> None:
        no_tls = _tls_attempt_is_useless(url)
        if no_tls and url.get_driver_name() == "pymysql":
            url = url.update_query_dict({"ssl_disabled": "true"})  # the URLs tests get, too
        # A fresh session per operation: ``USE`` and ``foreign_key_checks`` never leak.
        super().__init__(url, pool.NullPool, {"ssl_disabled": True} if no_tls else None)
        self._templates: dict[str, _MysqlTemplate] = {}
        # Resets name every table with its database: one session kept for all of them (a new
        # connection costs MariaDB 20 ms here), and never on the test's own database.
        self._resetter: Engine = create_engine(
            sync_url(url), poolclass=pool.QueuePool, pool_size=1, connect_args=self._connect_args
        )
        event.listen(self._resetter, "connect", reset.prepare_session)

    def create(self, name: str) -> str:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self._quote(name)}")
        return self.url(name)

    def commits_by_itself(self, statement: str) -> bool:
        """MySQL/MariaDB commit before and after every DDL statement (and a few others)."""
        return super().commits_by_itself(statement) or _IMPLICIT_COMMIT.match(statement) is not None

    def prepare_template(self, name: str) -> None:
        q = self._quote
        with self._admin.connect() as conn:
            charset, collation = conn.execute(
                text(
                    "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                    "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"
                ),
                {"n": name},
            ).one()
            found = _MysqlTemplate(f"CHARACTER SET {charset} COLLATE {collation}")
            kinds = conn.exec_driver_sql(f"SHOW FULL TABLES FROM {q(name)}").all()
            for table, kind in kinds:
                if table == _MARKER:
                    continue
                if kind == "VIEW":
                    row = conn.exec_driver_sql(f"SHOW CREATE VIEW {q(name)}.{q(table)}").one()
                    found.views.append(row[1])
                    continue
                row = conn.exec_driver_sql(f"SHOW CREATE TABLE {q(name)}.{q(table)}").one()
                found.tables.append(row[1])
                if kind == "SEQUENCE":  # its one row is its state
                    found.rows.append((table, None))
                elif conn.exec_driver_sql(f"SELECT 1 FROM {q(name)}.{q(table)} LIMIT 1").first():
                    found.rows.append((table, reset.stored_columns(conn, name, table)))
            for (trigger,) in conn.execute(
                text(
                    "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = :n ORDER BY ACTION_ORDER"
                ),
                {"n": name},
            ):
                row = conn.exec_driver_sql(f"SHOW CREATE TRIGGER {q(name)}.{q(trigger)}").one()
                found.triggers.append(row[2])
        self._templates[name] = found

    def copy(self, template: str, name: str) -> str:
        found = self._templates.get(template)
        if found is None:
            self.prepare_template(template)
            found = self._templates[template]
        q = self._quote
        # View and trigger bodies name the template's database explicitly: point them at the copy.
        here = (f"`{template}`.", f"`{name}`.")  # as SHOW CREATE writes it
        with self._admin.connect() as raw:
            conn = raw.execution_options(no_parameters=True)  # a '%' in DDL stays a '%'
            conn.exec_driver_sql(f"CREATE DATABASE {q(name)} {found.create_database}")
            conn.exec_driver_sql(f"USE {q(name)}")
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
            for statement in found.tables:
                conn.exec_driver_sql(statement)
            for table, columns in found.rows:
                into = f"{q(name)}.{q(table)}" + (f" ({columns})" if columns else "")
                conn.exec_driver_sql(
                    f"INSERT INTO {into} SELECT {columns or '*'} FROM {q(template)}.{q(table)}"
                )
            pending = [v.replace(*here) for v in found.views]
            for _ in range(len(pending)):  # a view may read another: retry in dependency order
                failed = []
                for statement in pending:
                    try:
                        conn.exec_driver_sql(statement)
                    except exc.DBAPIError:
                        failed.append(statement)
                pending = failed
            for statement in pending:
                conn.exec_driver_sql(statement)  # raises the real error
            for statement in found.triggers:
                conn.exec_driver_sql(statement.replace(*here))
        return self.url(name)

    def drop(self, name: str) -> None:
        with self._admin.connect() as conn:
            # A connection a test left inside a transaction would block DROP for a year
            # (lock_wait_timeout): end the sessions still using the database first.
            reset.end_sessions(conn, name)
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(name)}")
        self._templates.pop(name, None)

    def _snapshot(self, name: str) -> reset.Snapshot:
        with self._resetter.connect() as conn:
            return reset.snapshot(conn, name)

    def _restore(self, name: str, fresh: object, known: object | None) -> object | None:
        assert isinstance(fresh, reset.Snapshot)
        with self._resetter.connect() as conn:
            listing = known if isinstance(known, reset.Listing) else None
            return reset.restore(conn, name, fresh, listing)

    def identity(self) -> str:
        with self._admin.connect() as conn:
            return f"mysql {conn.exec_driver_sql('SELECT VERSION()').scalar()}"

    def close(self) -> None:
        self._resetter.dispose()
        super().close()

    @contextmanager
    def build_lock(self, name: str) -> Iterator[None]:
        # GET_LOCK on a connection of its own (the admin pool keeps none): freed if we die.
        with self._admin.connect() as conn:
            while conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": name}).scalar() != 1:
                pass  # another process is still building: keep waiting
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})

    def publish(self, building: str, final: str, mark: str) -> None:
        # No RENAME DATABASE here: copy it to its name, then add the marker table last (copies
        # skip it); a copy cut short leaves no marker, so the next builder starts again.
        self.drop(final)
        self.copy(building, final)
        with self._admin.connect() as conn:
            conn.execute(
                text(f"CREATE TABLE {self._quote(final)}.{_MARKER} AS SELECT :m AS mark"),
                {"m": mark},
            )
        self.drop(building)

    def ready_mark(self, name: str) -> str | None:
        with self._admin.connect() as conn:
            try:
                found = conn.exec_driver_sql(
                    f"SELECT mark FROM {self._quote(name)}.{_MARKER}"
                ).scalar()
            except exc.DBAPIError:  # no such database, or no marker yet
                return None
        return None if found is None else str(found)

    def names(self) -> list[str]:
        with self._admin.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                        "WHERE SCHEMA_NAME LIKE :p ORDER BY 1"
                    ),
                    {"p": PREFIX.replace("_", r"\_") + "%"},
                ).scalars()
            )
