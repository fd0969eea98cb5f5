"""Create, copy and drop whole databases on a server: what the test plugin's janitor needs.

One class per backend, each using the fastest honest copy measured in bench/bench_fixtures.py:
SQLite copies the file; PostgreSQL runs ``CREATE DATABASE ... TEMPLATE``; MySQL/MariaDB, which
have no template databases, replay the template's own ``SHOW CREATE`` statements and copy the
rows that migrations inserted.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, exc, pool, text
from sqlalchemy.engine import URL

from .database import is_async_url, parse_url
from .errors import ConfigurationError
from .urls import mask_url

PREFIX = "fmpt_"
"""Every database the plugin makes starts with this, so leftovers are recognizable."""

_SYNC_DRIVERS = {
    "sqlite": ("pysqlite",),
    "postgresql": ("psycopg", "psycopg2", "pg8000"),
    "mysql": ("pymysql", "mysqldb", "mysqlconnector"),
    "mariadb": ("pymysql", "mysqldb", "mysqlconnector"),
}


def sync_url(url: str | URL) -> URL:
    """The same database through a blocking driver: the janitor's and ``migrated_engine``'s."""
    parsed = parse_url(url, "--migrate-db-url")
    if not is_async_url(parsed):
        return parsed
    backend = parsed.get_backend_name()
    for driver in _SYNC_DRIVERS.get(backend, ()):
        candidate = parsed.set(drivername=f"{backend}+{driver}")
        try:
            candidate.get_dialect().import_dbapi()
        except ImportError:
            continue
        return candidate
    raise ConfigurationError(
        f"{mask_url(parsed)}: the test databases are created and dropped through a blocking "
        f"driver, and none is installed for {backend} (tried {', '.join(_SYNC_DRIVERS[backend])})"
    )


class DatabaseServer(ABC):
    """Where test databases live; names are plain identifiers made by the janitor."""

    slow_drop = True
    """Whether a drop costs enough server time to be worth doing in the background."""

    @abstractmethod
    def url(self, name: str) -> str:
        """The URL of database ``name``, with the driver the user gave."""

    @abstractmethod
    def create(self, name: str) -> str:
        """An empty database; its URL."""

    @abstractmethod
    def copy(self, template: str, name: str) -> str:
        """A new database with the template's schema and rows; its URL."""

    @abstractmethod
    def drop(self, name: str) -> None:
        """Drop the database, even with connections left open on it; no error if missing."""

    @abstractmethod
    def names(self) -> list[str]:
        """The databases on the server whose names start with ``PREFIX``."""

    def prepare_template(self, name: str) -> None:  # noqa: B027 - a hook, optional
        """Called once the template is migrated, before the first copy."""

    def close(self) -> None:  # noqa: B027 - a hook, optional
        """Release the server's connections."""


class SqliteServer(DatabaseServer):
    """SQLite files in one directory; a copy is a file copy."""

    slow_drop = False

    def __init__(self, directory: Path, drivername: str = "sqlite") -> None:
        self.directory = directory
        self.drivername = drivername
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.sqlite"

    def url(self, name: str) -> str:
        return f"{self.drivername}:///{self.path(name)}"

    def create(self, name: str) -> str:
        self.path(name).touch()  # an empty file is an empty SQLite database
        return self.url(name)

    def prepare_template(self, name: str) -> None:
        # A WAL-mode template keeps recent pages in its -wal file: fold them into the main file,
        # so copying that one file copies everything.
        connection = sqlite3.connect(self.path(name))
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()

    def copy(self, template: str, name: str) -> str:
        shutil.copyfile(self.path(template), self.path(name))
        return self.url(name)

    def drop(self, name: str) -> None:
        main = self.path(name)
        for suffix in ("", "-wal", "-shm", "-journal", ".migrate-lock"):
            main.with_name(main.name + suffix).unlink(missing_ok=True)

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob(f"{PREFIX}*.sqlite"))


class _ServerWithAdmin(DatabaseServer):
    """A database server reached through an autocommit connection to the URL's own database."""

    def __init__(self, url: URL, admin_pool: type[pool.Pool]) -> None:
        self._url = url
        self._admin: Engine = create_engine(
            sync_url(url), isolation_level="AUTOCOMMIT", poolclass=admin_pool
        )
        self._quote = self._admin.dialect.identifier_preparer.quote

    def url(self, name: str) -> str:
        return self._url.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        self._admin.dispose()


class PostgresServer(_ServerWithAdmin):
    """``CREATE DATABASE ... TEMPLATE``: PostgreSQL copies the files, whatever the schema."""

    def __init__(self, url: URL) -> None:
        super().__init__(url, pool.QueuePool)  # one admin session kept for the whole run

    def create(self, name: str) -> str:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self._quote(name)}")
        return self.url(name)

    def prepare_template(self, name: str) -> None:
        # PostgreSQL refuses to copy a database anyone is connected to: lock the door, then end
        # whatever a migration's env.py may have left connected.
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {self._quote(name)} WITH ALLOW_CONNECTIONS false")
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )

    def copy(self, template: str, name: str) -> str:
        with self._admin.connect() as conn:
            try:
                conn.exec_driver_sql(
                    f"CREATE DATABASE {self._quote(name)} TEMPLATE {self._quote(template)}"
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
        with self._admin.connect() as conn:
            if (conn.dialect.server_version_info or (0,)) >= (13,):
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(name)} WITH (FORCE)")
                return
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"
                ),
                {"name": name},
            )
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(name)}")

    def names(self) -> list[str]:
        with self._admin.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE :p ORDER BY 1"),
                    {"p": PREFIX.replace("_", r"\_") + "%"},
                ).scalars()
            )


@dataclass
class _MysqlTemplate:
    """What a copy replays: the template's DDL, its seeded tables, its views and triggers."""

    create_database: str
    tables: list[str] = field(default_factory=list)
    rows: list[tuple[str, str | None]] = field(default_factory=list)  # (table, columns)
    views: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)


class MysqlServer(_ServerWithAdmin):
    """MySQL/MariaDB: replay ``SHOW CREATE TABLE`` (with foreign keys and indexes), copy the
    rows migrations inserted, then views and triggers.

    ``CREATE TABLE ... LIKE`` was measured slower and drops foreign keys; both cost a few
    milliseconds per table, so a copy's cost follows the number of tables, not of revisions.
    """

    def __init__(self, url: URL) -> None:
        # A fresh session per operation: ``USE`` and ``foreign_key_checks`` never leak.
        super().__init__(url, pool.NullPool)
        self._templates: dict[str, _MysqlTemplate] = {}

    def create(self, name: str) -> str:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self._quote(name)}")
        return self.url(name)

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
                if kind == "VIEW":
                    row = conn.exec_driver_sql(f"SHOW CREATE VIEW {q(name)}.{q(table)}").one()
                    found.views.append(row[1])
                    continue
                row = conn.exec_driver_sql(f"SHOW CREATE TABLE {q(name)}.{q(table)}").one()
                found.tables.append(row[1])
                if kind == "SEQUENCE":  # its one row is its state
                    found.rows.append((table, None))
                elif conn.exec_driver_sql(f"SELECT 1 FROM {q(name)}.{q(table)} LIMIT 1").first():
                    found.rows.append((table, self._stored_columns(conn, name, table)))
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

    def _stored_columns(self, conn: Connection, schema: str, table: str) -> str:
        """Columns a row copy may write: generated ones are computed, never inserted."""
        columns = conn.execute(
            text(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t AND EXTRA NOT LIKE :g "
                "ORDER BY ORDINAL_POSITION"
            ),
            {"s": schema, "t": table, "g": "%GENERATED%"},
        ).scalars()
        return ", ".join(self._quote(c) for c in columns)

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
            for (session,) in conn.execute(
                text(
                    "SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = :n AND ID <> CONNECTION_ID()"
                ),
                {"n": name},
            ):
                with contextlib.suppress(exc.DBAPIError):  # already gone
                    conn.exec_driver_sql(f"KILL CONNECTION {int(session)}")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(name)}")
        self._templates.pop(name, None)

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


def database_server(url: str | None, directory: Path) -> DatabaseServer:
    """The server a URL names; ``None`` (or any SQLite URL) means SQLite files in ``directory``.

    For SQLite only the driver of the URL counts (``sqlite+aiosqlite://`` gives aiosqlite URLs).
    """
    if not url:
        return SqliteServer(directory)
    parsed = parse_url(url, "--migrate-db-url")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return SqliteServer(directory, parsed.drivername)
    if backend == "postgresql":
        return PostgresServer(parsed)
    if backend in ("mysql", "mariadb"):
        return MysqlServer(parsed)
    raise ConfigurationError(
        f"--migrate-db-url / MIGRATE_TEST_DATABASE_URL: {mask_url(parsed)}: test databases can be "
        "made on SQLite, PostgreSQL and MySQL/MariaDB"
    )
