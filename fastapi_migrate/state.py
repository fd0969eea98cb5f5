"""``DatabaseState``: what the database holds, read without writing anything."""

from __future__ import annotations

from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect


@dataclass(frozen=True)
class DatabaseState:
    """The version table's revisions and whether any other table exists."""

    has_version_table: bool
    revisions: tuple[str, ...]
    has_tables: bool

    @property
    def is_empty(self) -> bool:
        return not self.has_tables and not self.revisions

    @property
    def is_unversioned(self) -> bool:
        return self.has_tables and not self.has_version_table


def read_state(
    connection: Connection, *, version_table: str, version_table_schema: str | None = None
) -> DatabaseState:
    """Read the version table and the table list; unlike ``alembic current``, creates nothing."""
    context = MigrationContext.configure(
        connection,
        opts={"version_table": version_table, "version_table_schema": version_table_schema},
    )
    inspector = inspect(connection)
    has_version_table = inspector.has_table(version_table, schema=version_table_schema)
    revisions = tuple(context.get_current_heads()) if has_version_table else ()
    schemas = {None, version_table_schema}
    has_tables = any(
        name != version_table
        for schema in schemas
        for name in inspector.get_table_names(schema=schema)
    )
    return DatabaseState(has_version_table, revisions, has_tables)


def read_revisions(
    connection: Connection, *, version_table: str, version_table_schema: str | None = None
) -> tuple[str, ...]:
    """Only the current revisions: the cheap query a no-op start and the health route need."""
    context = MigrationContext.configure(
        connection,
        opts={"version_table": version_table, "version_table_schema": version_table_schema},
    )
    return tuple(context.get_current_heads())
