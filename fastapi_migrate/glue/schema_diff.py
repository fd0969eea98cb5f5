"""``schema_differences``: how the models differ from the database, one readable line each;
``schema_snapshot``: the database's schema as it reports it, to compare two moments.

Alembic's autogenerate ``compare_metadata`` finds the differences; this names them for a human
(a CI log), where Alembic's own tuples show reprs of ``Table`` and ``Column`` objects.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import suppress
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, Index, MetaData, Table, inspect
from sqlalchemy.schema import Constraint

from ..backends.lease import LEASE_TABLE

_MISSING = "in the models, missing from the database"
_EXTRA = "in the database, not in the models"


def schema_differences(
    connection: Connection,
    metadata: MetaData,
    *,
    version_tables: Collection[str] = ("alembic_version",),
    version_table_schema: str | None = None,
) -> list[str]:
    """Every difference between ``metadata`` and the database's schema (the version tables of
    every tree and the lock's lease table are left out), as Alembic's autogenerate sees it
    with ``compare_type``."""

    def not_a_version_table(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        ours = name in version_tables or name == LEASE_TABLE
        return not (type_ == "table" and reflected and ours)

    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "target_metadata": metadata,
            "version_table": next(iter(version_tables), "alembic_version"),
            "version_table_schema": version_table_schema,
            "include_object": not_a_version_table,
        },
    )
    lines: list[str] = []
    for diff in compare_metadata(context, metadata):
        # Changes to one column come grouped in a list.
        for one in diff if isinstance(diff, list) else [diff]:
            lines.append(describe(one))
    return lines


def _qualified(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def _thing(obj: Any) -> str:
    """``table t``, ``index ix on t``, ``foreign key fk on t``..."""
    if isinstance(obj, Table):
        return f"table {_qualified(obj.schema, obj.name)}"
    table = getattr(obj, "table", None)
    on = f" on {_qualified(table.schema, table.name)}" if isinstance(table, Table) else ""
    if isinstance(obj, Index):
        return f"index {obj.name or '(unnamed)'}{on}"
    if isinstance(obj, Constraint):
        kind = type(obj).__name__.replace("Constraint", "").replace("ForeignKey", "foreign key")
        return f"{kind.lower().strip() or 'constraint'} constraint {obj.name or '(unnamed)'}{on}"
    return repr(obj)


def describe(diff: tuple[Any, ...]) -> str:
    """One of ``compare_metadata``'s tuples as a sentence."""
    kind = diff[0]
    if kind in ("add_column", "remove_column"):
        _, schema, table, column = diff
        assert isinstance(column, Column)
        where = _MISSING if kind == "add_column" else _EXTRA
        return f"column {_qualified(schema, table)}.{column.name}: {where}"
    if kind.startswith("modify_"):
        _, schema, table, column, _existing, old, new = diff
        what = {"modify_default": "server default"}.get(kind, kind.removeprefix("modify_"))
        return (
            f"column {_qualified(schema, table)}.{column}: {what} is {_show(old)} in the "
            f"database, {_show(new)} in the models"
        )
    if kind.startswith(("add_", "remove_")) and len(diff) == 2:
        where = _MISSING if kind.startswith("add_") else _EXTRA
        return f"{_thing(diff[1])}: {where}"
    return f"{kind}: " + ", ".join(_show(part) for part in diff[1:])


def _show(value: Any) -> str:
    value = getattr(value, "arg", value)  # a server default wraps its expression
    if value is None:
        return "none"
    if hasattr(value, "compile"):
        try:
            return str(value.compile())
        except Exception:
            return repr(value)
    return str(value)


def schema_snapshot(
    connection: Connection, *, leave_out: Collection[str] = (), schema: str | None = None
) -> dict[str, str]:
    """The schema as the database reports it, one entry per thing (``table t``, ``column
    t.c``, ``index ix on t``, ``enum e``...) and its description; tables in ``leave_out`` (the
    version tables) are not in it. Two snapshots compare with ``snapshot_differences``."""
    inspector = inspect(connection)
    found: dict[str, str] = {}
    dialect = connection.dialect
    for table in sorted(inspector.get_table_names(schema=schema)):
        if table in leave_out:
            continue
        found[f"table {table}"] = ""
        for column in inspector.get_columns(table, schema=schema):
            kind = column["type"].compile(dialect=dialect)
            null = "NULL" if column["nullable"] else "NOT NULL"
            default = f" DEFAULT {column['default']}" if column.get("default") else ""
            found[f"column {table}.{column['name']}"] = f"{kind} {null}{default}"
        pk = inspector.get_pk_constraint(table, schema=schema)
        if pk and pk.get("constrained_columns"):
            found[f"primary key on {table}"] = ", ".join(pk["constrained_columns"])
        for fk in inspector.get_foreign_keys(table, schema=schema):
            columns = ", ".join(fk["constrained_columns"])
            found[f"foreign key {fk.get('name') or '(unnamed)'} on {table} ({columns})"] = (
                f"-> {fk['referred_table']} ({', '.join(fk['referred_columns'])})"
            )
        for index in inspector.get_indexes(table, schema=schema):
            unique = "UNIQUE " if index.get("unique") else ""
            columns = ", ".join(str(c) for c in index.get("column_names") or [])
            found[f"index {index.get('name') or '(unnamed)'} on {table}"] = f"{unique}({columns})"
        for unique_constraint in inspector.get_unique_constraints(table, schema=schema):
            name = unique_constraint.get("name") or "(unnamed)"
            columns = ", ".join(unique_constraint["column_names"])
            found[f"unique constraint {name} on {table}"] = f"({columns})"
        with suppress(NotImplementedError):
            for check in inspector.get_check_constraints(table, schema=schema):
                name = check.get("name") or "(unnamed)"
                found[f"check constraint {name} on {table}"] = str(check.get("sqltext"))
    for view in sorted(inspector.get_view_names(schema=schema)):
        found[f"view {view}"] = ""
    get_enums = getattr(inspector, "get_enums", None)  # PostgreSQL: types outlive tables
    if get_enums is not None:
        for enum in get_enums(schema=schema or "public"):
            found[f"enum {enum['name']}"] = ", ".join(enum["labels"])
    with suppress(NotImplementedError):
        for sequence in sorted(inspector.get_sequence_names(schema=schema)):
            found[f"sequence {sequence}"] = ""
    return found


def snapshot_differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What ``after`` has that ``before`` had not, lacks, or describes differently."""
    lines = []
    for thing in sorted(before.keys() | after.keys()):
        if thing not in before:
            lines.append(f"{thing}: left behind ({after[thing] or 'exists'})")
        elif thing not in after:
            lines.append(f"{thing}: gone")
        elif before[thing] != after[thing]:
            lines.append(f"{thing}: was {before[thing]}, now {after[thing]}")
    return lines
