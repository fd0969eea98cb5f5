"""``VersionTable``: the one reader of Alembic's version table, and ``DatabaseState``.

Every part of fastapi-migrate that asks "where is the database?" (the no-op start, the wait,
the lock's waiters, the CLI, the health route, the test plugin) asks here, and "is it at the
target?" has one answer: ``at_target``. Reading never writes: unlike ``alembic current``, nothing
is created on an empty database (alembic #694).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import DBAPICursor

from ..backends.lease import LEASE_TABLE
from ..foundation.errors import ConfigurationError


@dataclass(frozen=True)
class DatabaseState:
    """One tree's view of the database: its version table's revisions, and whether other
    tables exist (decides empty, versioned and unversioned)."""

    has_version_table: bool
    revisions: tuple[str, ...]
    has_tables: bool

    @property
    def is_empty(self) -> bool:
        return not self.has_tables and not self.revisions

    @property
    def is_unversioned(self) -> bool:
        return self.has_tables and not self.has_version_table


@dataclass(frozen=True)
class VersionTable:
    """Where a tree records its revisions: ``MIGRATE_VERSION_TABLE`` in
    ``MIGRATE_VERSION_TABLE_SCHEMA``."""

    name: str = "alembic_version"
    schema: str | None = None

    def read(self, connection: Connection) -> tuple[str, ...]:
        """The revisions recorded; raises (a ``SQLAlchemyError``) when the table is missing.

        Plain SQL: one query, no inspection, no Core compile (a first compile costs
        milliseconds on a no-op start)."""
        rows = connection.exec_driver_sql(self.select(connection.dialect))
        return tuple(str(row[0]) for row in rows)

    def read_with(self, cursor: DBAPICursor, dialect: Dialect) -> tuple[str, ...]:
        """The same on a bare driver cursor (``Database.read_bare``); raises the driver's
        error when the table is missing."""
        cursor.execute(self.select(dialect))
        return tuple(str(row[0]) for row in cursor.fetchall())

    def select(self, dialect: Dialect) -> str:
        """The one statement that reads the table, quoted as Alembic's ``Table`` would be."""
        preparer = dialect.identifier_preparer
        table = preparer.quote(self.name)
        if self.schema is not None:
            table = f"{preparer.quote_schema(self.schema)}.{table}"
        return f"SELECT version_num FROM {table}"

    def exists(self, connection: Connection) -> bool:
        return inspect(connection).has_table(self.name, schema=self.schema)

    def read_if_present(self, connection: Connection) -> tuple[str, ...]:
        """The revisions recorded, or none when the table is missing (no error inside the
        caller's transaction)."""
        return self.read(connection) if self.exists(connection) else ()

    def state(self, connection: Connection) -> DatabaseState:
        """This tree's state, as if it were the database's only tree."""
        return read_states(connection, [self], adoptable=[False])[0]


def read_states(
    connection: Connection, tables: Sequence[VersionTable], *, adoptable: Sequence[bool]
) -> list[DatabaseState]:
    """Each tree's state, with emptiness judged once for the whole database.

    A tree whose version table is missing while other tables exist is unversioned when it can
    be adopted (``adoptable``: it has a baseline) or when no tree has a version table yet;
    otherwise it is a package new to a versioned database, and replays from base.
    """
    inspector = inspect(connection)
    schemas = {None, *(t.schema for t in tables)}
    missing = sorted(s for s in schemas if s is not None and s not in inspector.get_schema_names())
    if missing:  # else: SQLite and MariaDB fail on reading, PostgreSQL at the first revision
        raise ConfigurationError(
            f"MIGRATE_VERSION_TABLE_SCHEMA: the database has no schema {missing[0]!r} (on "
            "SQLite: no attached database of that name); create it first, or unset "
            "MIGRATE_VERSION_TABLE_SCHEMA to keep the version table in the default schema"
        )
    names = {schema: set(inspector.get_table_names(schema=schema)) for schema in schemas}
    ours = {t.name for t in tables} | {LEASE_TABLE}  # the lease is the lock's, not the app's
    has_tables = any(name not in ours for found in names.values() for name in found)
    present = [t.name in names[t.schema] for t in tables]
    states = []
    for table, has_version_table, can_adopt in zip(tables, present, adoptable, strict=True):
        if has_version_table:
            states.append(DatabaseState(True, table.read(connection), has_tables))
        elif has_tables and (can_adopt or not any(present)):
            states.append(DatabaseState(False, (), True))
        else:
            states.append(DatabaseState(False, (), False))
    return states


def at_target(current: Sequence[str], wanted: Sequence[str]) -> bool:
    """Whether the database holds exactly the target revisions: the one answer to "is it at
    the target" (a repeated row is not, since Alembic would refuse to run on it)."""
    return len(set(current)) == len(current) and set(current) == set(wanted)
