"""Which tables exist, from a live database or from the history rendered offline, and the
estimated size of the tables findings name.

Only existing tables count: one the range created earlier has no rows and no traffic yet.
Table names are compared without schema and in upper case (as ``sql.statements`` gives them).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text


def database_tables(connection: Connection) -> set[str]:
    """The tables of the connection's default schema."""
    return {name.upper() for name in inspect(connection).get_table_names()}


@dataclass(frozen=True)
class Size:
    rows: int | None  # estimated; None when the database has no estimate yet
    bytes: int | None

    def describe(self) -> str:
        rows = "unknown rows" if self.rows is None else f"~{self.rows:,} rows"
        return rows if self.bytes is None else f"{rows}, {_bytes(self.bytes)}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def table_sizes(
    connection: Connection, tables: set[str], *, count_up_to: int | None
) -> dict[str, Size]:
    """Each table's estimated rows and bytes (PostgreSQL ``pg_class``, MySQL/MariaDB
    ``information_schema.tables``). Where there is no estimate (a table never analyzed, or
    SQLite) and ``count_up_to`` is set, the rows are counted, at most that many plus one."""
    if not tables:
        return {}
    dialect = connection.dialect.name
    found: dict[str, Size] = {}
    if dialect == "postgresql":
        rows = connection.execute(
            text(
                "SELECT c.relname, c.reltuples, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
                "AND n.nspname = current_schema()"
            )
        )
        for name, tuples, size in rows:
            if name.upper() in tables:
                estimate = int(tuples) if tuples is not None and tuples >= 0 else None
                found[name.upper()] = Size(estimate, int(size))
    elif dialect in ("mysql", "mariadb"):
        rows = connection.execute(
            text(
                "SELECT table_name, table_rows, data_length + index_length FROM "
                "information_schema.tables WHERE table_schema = DATABASE()"
            )
        )
        for name, estimate, size in rows:
            if name.upper() in tables:
                found[name.upper()] = Size(
                    int(estimate) if estimate is not None else None,
                    int(size) if size is not None else None,
                )
    if count_up_to is not None:
        names = {n.upper(): n for n in inspect(connection).get_table_names()}
        for table in tables:
            size = found.get(table)
            if (size is None or size.rows is None) and table in names:
                found[table] = Size(_count(connection, names[table], count_up_to), None)
    return found


def _count(connection: Connection, table: str, limit: int) -> int:
    """The rows of ``table``, counted up to ``limit`` + 1 (enough to compare with it)."""
    quoted = connection.dialect.identifier_preparer.quote(table)
    query = f"SELECT count(*) FROM (SELECT 1 FROM {quoted} LIMIT {int(limit) + 1}) AS seen"
    return int(connection.execute(text(query)).scalar_one())
