"""Whether the connection ``env.py`` gives Alembic reaches the database a command was asked to
migrate.

Many ``env.py`` files build their engine from the app's own settings and ignore
``sqlalchemy.url`` and ``config.attributes["connection"]``: a downgrade, a round trip or an
upgrade would then run on another database and report success. The check runs when ``env.py``
calls ``context.configure``, before Alembic reads or writes anything: the connection handed
over is accepted at once; any other is compared with it (or with the URL) by what the servers
themselves report, so ``localhost`` and ``127.0.0.1``, or two drivers, are the same database.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, exc
from sqlalchemy.engine import URL, make_url

from ..backends.database import Database
from ..foundation.errors import ConfigurationError
from ..foundation.redaction import mask_url

# The database, and the server as it reports itself: an address would differ between a socket
# and TCP, the port and the start time (PostgreSQL) or host name (MariaDB) do not.
_QUERIES = {
    "postgresql": "SELECT current_database(), current_setting('port'), "
    "CAST(pg_postmaster_start_time() AS TEXT)",
    "mysql": "SELECT DATABASE(), @@hostname, @@port",
    "mariadb": "SELECT DATABASE(), @@hostname, @@port",
}
_EXPECTED = "fastapi_migrate.expected_database"


@dataclass(frozen=True)
class Identity:
    """One database as its server names it: the dialect, then its values (``None`` for a
    SQLite database in memory, which no other connection can reach)."""

    dialect: str
    values: tuple[str, ...] | None

    def describe(self) -> str:
        if self.values is None:
            return "a SQLite database in memory"
        if self.dialect == "sqlite":
            return f"the file {self.values[0]}"
        if self.dialect == "postgresql":
            return f"database {self.values[0]!r} of the server on port {self.values[1]}"
        return f"database {self.values[0]!r} on {self.values[1]}:{self.values[2]}"


def identity_of(connection: Connection) -> Identity | None:
    """What the server says this connection reaches; ``None`` where it cannot say (another
    dialect, a function the role may not call). Leaves no transaction open that was not."""
    dialect = connection.dialect.name
    began = connection.in_transaction()
    try:
        if dialect == "sqlite":
            rows = connection.exec_driver_sql("PRAGMA database_list").all()
            path = next((str(row[2]) for row in rows if row[1] == "main"), "")
            return Identity(dialect, (os.path.realpath(path),) if path else None)
        query = _QUERIES.get(dialect)
        if query is None:
            return None
        row = connection.exec_driver_sql(query).one()
        return Identity("postgresql" if dialect == "postgresql" else "mysql", tuple(map(str, row)))
    except exc.DBAPIError:
        return None
    finally:
        if not began and connection.in_transaction():
            connection.rollback()


def identity_of_url(url: str) -> Identity | None:
    """The same for a URL, on a connection of its own, in a worker thread: ``env.py`` may be
    inside ``asyncio.run()``, where an async driver's connection cannot be awaited."""

    def read() -> Identity | None:
        db = Database(url)
        try:
            return db.run(identity_of)
        finally:
            db.dispose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(read).result()


def refuse_another_database(attributes: dict[Any, Any], configured: Connection | None) -> None:
    """Raise ``ConfigurationError`` unless ``configured`` (the connection ``env.py`` passed to
    ``context.configure``) reaches the database of ``attributes`` (a Config of ours: its
    ``connection``, else its ``database_url``). Nothing has been read or written yet."""
    ours: Connection | None = attributes.get("connection")
    url: str | None = attributes.get("database_url")
    if configured is None:
        return  # offline (--sql)
    if ours is not None:
        if _same_connection(configured, ours):
            return
        asked = ours.engine.url
    elif url is not None:
        asked = make_url(url)
    else:
        return  # no database asked for (history, heads)
    found = identity_of(configured)
    if _EXPECTED not in attributes:
        attributes[_EXPECTED] = identity_of(ours) if ours is not None else identity_of_url(str(url))
    expected: Identity | None = attributes[_EXPECTED]
    if found is not None and expected is not None:
        if found == expected and found.values is not None:
            return
    elif _same_url(configured.engine.url, asked):
        return  # the servers cannot say: the URLs agree
    theirs = f"{mask_url(configured.engine.url)}, " + (
        found.describe() if found is not None else "unknown"
    )
    wanted = f"{mask_url(asked)}, " + (expected.describe() if expected is not None else "unknown")
    raise ConfigurationError(
        f"env.py connects to another database ({theirs}) than the one to migrate ({wanted}); "
        "nothing was migrated. In env.py, use the connection and URL fastapi-migrate passes: "
        'connectable = config.attributes.get("connection") or engine_from_config(...), with '
        'the URL from config.get_main_option("sqlalchemy.url") instead of the app\'s settings'
    )


def _same_connection(configured: Any, ours: Connection) -> bool:
    """The very connection handed over, or one on the same driver connection (``env.py`` may
    pass what ``.connect()`` gave it, a wrapper of ours)."""
    if configured is ours:
        return True
    try:
        return bool(configured.connection.dbapi_connection is ours.connection.dbapi_connection)
    except (AttributeError, exc.SQLAlchemyError):
        return False


def _same_url(a: URL, b: URL) -> bool:
    """Same backend, host, port and database, where no server could tell."""
    return (a.get_backend_name(), a.host, a.port, a.database) == (
        b.get_backend_name(),
        b.host,
        b.port,
        b.database,
    )
