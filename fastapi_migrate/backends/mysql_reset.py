"""Reuse a MySQL/MariaDB test database: prove it is back in a fresh copy's state, or say it is not.

MariaDB has no template: a copy replays every table's ``CREATE TABLE`` (over a second for 200
tables), while most tests write a few rows. After a test, ``restore`` compares the database with
what a fresh copy looked like (``snapshot``) and puts back what a test commonly changes:

- the schema: ``information_schema`` (tables, columns, indexes, constraints, views, triggers,
  routines, events, grants on the database) read and hashed, the database's name taken out.
  Any difference means: not reusable;
- rows: tables empty in the copy are checked for rows, the others checksummed
  (``CHECKSUM TABLE``); every table's ``AUTO_INCREMENT`` is compared. A table that differs is
  emptied (``TRUNCATE`` where that also gives the copy's counter, else ``DELETE``), its seed rows
  (kept from the copy) inserted again, and its counter set back; a changed sequence object means
  not reusable.

Sessions the test left open are killed first. After the reset, rows and counters are read
again and must equal the snapshot's: anything short of equal, any error, and the caller drops
the database and copies it afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, exc, text

from ..foundation.retry import poll
from .base import children_first

_TABLE_QUERIES = (
    "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, COLUMN_TYPE, "
    "CHARACTER_SET_NAME, COLLATION_NAME, COLUMN_KEY, EXTRA, COLUMN_COMMENT, "
    "GENERATION_EXPRESSION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :s",
    "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, COLLATION, SUB_PART, "
    "NULLABLE, INDEX_TYPE, COMMENT, INDEX_COMMENT FROM information_schema.STATISTICS "
    "WHERE TABLE_SCHEMA = :s",
    "SELECT CONSTRAINT_NAME, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, REFERENCED_TABLE_SCHEMA, "
    "REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
    "WHERE CONSTRAINT_SCHEMA = :s",
    "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME, MATCH_OPTION, UPDATE_RULE, "
    "DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = :s",
    "SELECT CONSTRAINT_NAME, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = :s",
    "SELECT TABLE_NAME, TABLE_TYPE, ENGINE, ROW_FORMAT, TABLE_COLLATION, CREATE_OPTIONS, "
    "TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s",
)
"""What a table's definition (its ``.frm``) holds: every ``ALTER TABLE`` rewrites that file, and
so changes the table's ``CREATE_TIME``. Costly (every table opened): read only when a
``CREATE_TIME`` changed, or could have changed unseen. Primary keys and unique constraints are
indexes (``STATISTICS``); foreign keys are in the two constraint views."""

_OTHER_VIEWS = (
    (
        "SCHEMATA",
        "SCHEMA_NAME",
        "DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, SCHEMA_COMMENT",
    ),
    (
        "VIEWS",
        "TABLE_SCHEMA",
        "TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, IS_UPDATABLE, DEFINER, SECURITY_TYPE",
    ),
    (
        "TRIGGERS",
        "EVENT_OBJECT_SCHEMA",  # a trigger lives in its table's schema; indexed, cheap
        "TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_ORDER, ACTION_STATEMENT, "
        "ACTION_TIMING, SQL_MODE, DEFINER",
    ),
    (
        "ROUTINES",
        "ROUTINE_SCHEMA",
        "ROUTINE_NAME, ROUTINE_TYPE, DTD_IDENTIFIER, ROUTINE_DEFINITION, IS_DETERMINISTIC, "
        "SQL_DATA_ACCESS, SECURITY_TYPE, SQL_MODE, ROUTINE_COMMENT, DEFINER",
    ),
    (
        "PARAMETERS",
        "SPECIFIC_SCHEMA",
        "SPECIFIC_NAME, ORDINAL_POSITION, PARAMETER_MODE, PARAMETER_NAME, DTD_IDENTIFIER",
    ),
    (
        "EVENTS",
        "EVENT_SCHEMA",
        "EVENT_NAME, EVENT_DEFINITION, EVENT_TYPE, EXECUTE_AT, INTERVAL_VALUE, INTERVAL_FIELD, "
        "STATUS, ON_COMPLETION, DEFINER",
    ),
    ("SCHEMA_PRIVILEGES", "TABLE_SCHEMA", "GRANTEE, PRIVILEGE_TYPE, IS_GRANTABLE"),
    ("TABLE_PRIVILEGES", "TABLE_SCHEMA", "GRANTEE, TABLE_NAME, PRIVILEGE_TYPE, IS_GRANTABLE"),
    (
        "COLUMN_PRIVILEGES",
        "TABLE_SCHEMA",
        "GRANTEE, TABLE_NAME, COLUMN_NAME, PRIVILEGE_TYPE, IS_GRANTABLE",
    ),
)
"""The rest of the schema and the grants, outside the tables' files (view, its schema column,
the columns that define an object): cheap, read every time, in one statement."""

_NO_VIEWS = frozenset({"VIEWS"})
"""What the listing proves empty when it has no view (a view is listed as a table): not read."""

_TABLES = (
    "SELECT COUNT(*), GROUP_CONCAT(CONCAT_WS(CHAR(0), TABLE_NAME, TABLE_TYPE, "
    "IFNULL(AUTO_INCREMENT, ''), IFNULL(UNIX_TIMESTAMP(CREATE_TIME), ''), "
    "IFNULL(UNIX_TIMESTAMP(CREATE_TIME) >= UNIX_TIMESTAMP() - 1, 0)) SEPARATOR 0x00)"
)
"""Every table, view and sequence: its counter, when its definition was last written, and
whether that was within the last second (a later ``ALTER`` could then leave the same time). In
one row, the fields separated by NUL (which no name may hold): 200 rows cost PyMySQL, in Python,
more than the server takes to list them."""

_FROM_TABLES = " FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s"
_SESSIONS_ON_IT = "FROM information_schema.PROCESSLIST WHERE DB = :s AND ID <> CONNECTION_ID()"
_ANY_SESSION = f", (SELECT COUNT(*) {_SESSIONS_ON_IT})"

_FIELDS = 5


def prepare_session(dbapi_connection: Any, _record: object = None) -> None:
    """The resetter's session (every name it uses is qualified; no test's session): room for
    ``_TABLES``'s one row (MySQL's default is 1024 bytes), and no foreign key checks while
    tables are emptied and seeded again."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION group_concat_max_len = 1073741824, foreign_key_checks = 0")
    finally:
        cursor.close()


_FOREIGN_KEYS = text(
    "SELECT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = :s AND UNIQUE_CONSTRAINT_SCHEMA = :s AND TABLE_NAME <> "
    "REFERENCED_TABLE_NAME"
)

_OTHER_SESSIONS = text(f"SELECT ID {_SESSIONS_ON_IT}")

_SESSIONS_GONE_SECONDS = 10.0


@dataclass(frozen=True)
class Listing:
    """What ``information_schema.TABLES`` says of a database."""

    kinds: dict[str, str]
    counters: dict[str, int | None]
    written: dict[str, int | None]
    """Per table: its ``CREATE_TIME`` (seconds since the epoch)."""
    recent: frozenset[str]
    """The tables whose definition was written within the last second."""


@dataclass(frozen=True)
class Snapshot:
    """A fresh copy, as ``restore`` compares with it."""

    tables_fingerprint: dict[str, str]
    """Per table (and view): a hash of its definition."""
    other_fingerprint: str
    kinds: dict[str, str]
    tables: tuple[str, ...]
    """Every base table, children before the tables they reference."""
    state: dict[str, str | None]
    """Per table: None if empty, else its checksum; per sequence: its row."""
    counters: dict[str, int | None]
    """Per table: its ``AUTO_INCREMENT``."""
    sequences: frozenset[str]
    seeded: dict[str, tuple[str, list[tuple[Any, ...]]]]
    """The tables that had rows: the columns an ``INSERT`` may write, and the rows."""
    triggers: bool
    """Whether the schema has triggers (an ``INSERT`` of the reset may then write elsewhere)."""


def snapshot(conn: Connection, schema: str) -> Snapshot:
    """Read database ``schema``, a fresh copy nobody else is connected to: what every later
    reset must give back. ``conn`` may be on any database: every name is qualified."""
    listing, _ = _listing(conn, schema)
    tables = [t for t, kind in listing.kinds.items() if kind == "BASE TABLE"]
    sequences = frozenset(t for t, kind in listing.kinds.items() if kind == "SEQUENCE")
    references = [tuple(row) for row in conn.execute(_FOREIGN_KEYS, {"s": schema})]
    state = _state(conn, schema, tables, sequences, hashed=set(tables))
    seeded = {t: _rows(conn, schema, t) for t in tables if state[t] is not None}
    triggers = conn.execute(
        text("SELECT 1 FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = :s LIMIT 1"),
        {"s": schema},
    ).first()
    fresh = Snapshot(
        _table_fingerprints(conn, schema, None),
        _other_fingerprint(conn, schema, frozenset()),
        listing.kinds,
        children_first(tables, references),
        state,
        {t: listing.counters[t] for t in tables},
        sequences,
        seeded,
        triggers is not None,
    )
    conn.rollback()
    return fresh


def restore(
    conn: Connection, schema: str, fresh: Snapshot, known: Listing | None
) -> Listing | None:
    """Bring database ``schema`` back to ``fresh``: what ``information_schema.TABLES`` says of
    it now, to pass as ``known`` next time; None when that cannot be proven (drop it).
    ``known``: the listing when the database was last proven equal to a fresh copy, or None.

    A table's definition is read again (costly: the table is opened) only where it may have
    changed: its ``CREATE_TIME`` moved, or was within a second of ``known``'s reading (an
    ``ALTER`` in that same second would leave the time as it was); every table when ``known``
    is None."""
    listing, others = _listing(conn, schema, sessions=True)
    if others:
        end_sessions(conn, schema)
        listing, _ = _listing(conn, schema)
    if listing.kinds != fresh.kinds:
        return None
    has_views = "VIEW" in listing.kinds.values()
    if _other_fingerprint(conn, schema, frozenset() if has_views else _NO_VIEWS) != (
        fresh.other_fingerprint
    ):
        return None
    if known is None:
        check = set(listing.kinds)
    else:
        moved = {t for t in listing.written if listing.written[t] != known.written.get(t)}
        check = moved | known.recent
    if check and _table_fingerprints(conn, schema, check) != {
        t: fresh.tables_fingerprint.get(t) for t in check
    }:
        return None
    hashed = set(fresh.seeded)
    now = _state(conn, schema, list(fresh.tables), fresh.sequences, hashed=hashed)
    if any(now[s] != fresh.state[s] for s in fresh.sequences):
        return None
    dirty = {
        t
        for t in fresh.tables
        if now[t] != fresh.state[t] or listing.counters[t] != fresh.counters[t]
    }
    if not dirty:
        return listing
    reread = _reset_tables(conn, schema, fresh, dirty)
    if any(reread.counters[t] != fresh.counters[t] for t in dirty):
        return None
    # Without triggers, only the tables reset can have changed (TRUNCATE fires none).
    proven = [t for t in fresh.tables if fresh.triggers or t in dirty]
    after = _state(conn, schema, proven, fresh.sequences, hashed=hashed)
    if any(after[t] != fresh.state[t] for t in [*proven, *fresh.sequences]):
        return None
    return Listing(
        kinds=listing.kinds,
        counters={**listing.counters, **reread.counters},
        written={**listing.written, **reread.written},
        recent=(listing.recent - dirty) | reread.recent,
    )


def _reset_tables(conn: Connection, schema: str, fresh: Snapshot, dirty: set[str]) -> Listing:
    """Empty the ``dirty`` tables (``TRUNCATE``: rows and counter at once, and unlike ``ALTER
    TABLE`` it leaves the table's definition file alone), insert their seed rows again, and set
    back a counter still not the copy's; what the listing says of them then. The session has
    ``foreign_key_checks`` off (``prepare_session``): children and parents in any order."""
    q = _qualifier(conn, schema)
    for table in fresh.tables:
        if table in dirty:
            conn.exec_driver_sql(f"TRUNCATE TABLE {q(table)}")
    for table in reversed(fresh.tables):  # parents first
        if table in dirty and table in fresh.seeded:
            columns, rows = fresh.seeded[table]
            marks = ", ".join(["%s"] * len(rows[0]))
            conn.exec_driver_sql(f"INSERT INTO {q(table)} ({columns}) VALUES ({marks})", rows)
    conn.commit()
    listing, _ = _listing(conn, schema, dirty)
    altered = False
    for table in sorted(dirty):
        wanted = fresh.counters[table]
        if wanted is not None and listing.counters[table] != wanted:
            conn.exec_driver_sql(f"ALTER TABLE {q(table)} AUTO_INCREMENT = {int(wanted)}")
            altered = True
    return _listing(conn, schema, dirty)[0] if altered else listing


def _qualifier(conn: Connection, schema: str) -> Callable[[str], str]:
    """``table`` -> ```schema`.`table```."""
    quote = conn.dialect.identifier_preparer.quote
    return lambda table: f"{quote(schema)}.{quote(table)}"


def _other_fingerprint(conn: Connection, schema: str, empty: frozenset[str]) -> str:
    """A hash of what ``_OTHER_VIEWS`` say of ``schema``; the ``empty`` views are known to have
    no row for it and are not read."""
    found: dict[str, list[str]] = {view: [] for view, _, _ in _OTHER_VIEWS}
    parts = []
    for view, where, columns in _OTHER_VIEWS:
        if view in empty:
            continue
        quoted = ", ".join(f"QUOTE({c.strip()})" for c in columns.split(","))
        parts.append(
            f"SELECT '{view}', CONCAT_WS(',', {quoted}) FROM information_schema.{view} "
            f"WHERE {where} = %(s)s"
        )
    for view, row in conn.exec_driver_sql(" UNION ALL ".join(parts), {"s": schema}):
        found[str(view)].append(str(row))
    digest = hashlib.sha256()
    for view, _, _ in _OTHER_VIEWS:
        digest.update("\n".join(sorted(found[view])).replace(schema, "<db>").encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _listing(
    conn: Connection, schema: str, only: set[str] | None = None, *, sessions: bool = False
) -> tuple[Listing, bool]:
    """What ``information_schema.TABLES`` says of every table, or of the ``only`` ones (MariaDB
    then opens only those); and, asked for ``sessions``, whether another session is on
    ``schema`` (then the listing may be out of date as soon as it is read)."""
    statement = text(_TABLES + (_ANY_SESSION if sessions else "") + _FROM_TABLES)
    params: dict[str, Any] = {"s": schema}
    if only is not None:
        statement = text(f"{statement.text} AND TABLE_NAME IN :t").bindparams(
            bindparam("t", expanding=True)
        )
        params["t"] = sorted(only)
    count, joined, *others = conn.execute(statement, params).one()
    if isinstance(joined, bytes | bytearray):  # MySQL 8: CHAR() and 0x00 make it binary
        joined = joined.decode("utf-8")
    fields = str(joined).split("\0") if count else []
    if len(fields) != count * _FIELDS:  # cut short at group_concat_max_len
        raise ValueError(f"the listing of {schema} was cut short ({count} tables)")
    rows = [fields[i : i + _FIELDS] for i in range(0, len(fields), _FIELDS)]
    listing = Listing(
        kinds={r[0]: r[1] for r in rows},
        counters={r[0]: int(r[2]) if r[2] else None for r in rows},
        written={r[0]: int(r[3]) if r[3] else None for r in rows},
        recent=frozenset(r[0] for r in rows if r[4] == "1"),
    )
    return listing, bool(others and others[0])


def _table_fingerprints(conn: Connection, schema: str, only: set[str] | None) -> dict[str, str]:
    """Per table (or view; only the ``only`` ones when given): a hash of its definition."""
    found: dict[str, list[str]] = {}
    for number, query in enumerate(_TABLE_QUERIES):
        params: dict[str, Any] = {"s": schema}
        statement = text(query)
        if only is not None:
            statement = text(f"{query} AND TABLE_NAME IN :t").bindparams(
                bindparam("t", expanding=True)
            )
            params["t"] = sorted(only)
        for row in conn.execute(statement, params).mappings():
            found.setdefault(str(row["TABLE_NAME"]), []).append(f"{number} {tuple(row.values())!r}")
    return {
        table: hashlib.sha256("\n".join(sorted(rows)).replace(schema, "<db>").encode()).hexdigest()
        for table, rows in found.items()
    }


def _state(
    conn: Connection, schema: str, tables: list[str], sequences: frozenset[str], hashed: set[str]
) -> dict[str, str | None]:
    """Per table: whether it has rows (``hashed`` ones: a checksum of them); per sequence: its
    row. Two statements, whatever the number of tables."""
    q = _qualifier(conn, schema)
    state: dict[str, str | None] = dict.fromkeys(tables)
    plain = [t for t in tables if t not in hashed]
    if plain:
        union = " UNION ALL ".join(
            f"SELECT {i} FROM DUAL WHERE EXISTS (SELECT 1 FROM {q(t)})" for i, t in enumerate(plain)
        )
        for (index,) in conn.exec_driver_sql(union):
            state[plain[index]] = "rows"
    checked = [t for t in tables if t in hashed]
    if checked:
        listing = ", ".join(q(t) for t in checked)
        for name, checksum in conn.exec_driver_sql(f"CHECKSUM TABLE {listing} EXTENDED"):
            table = str(name).split(".", 1)[1]  # "schema.table"
            state[table] = None if checksum in (None, 0) else str(checksum)
    for sequence in sorted(sequences):
        state[sequence] = repr(tuple(conn.exec_driver_sql(f"SELECT * FROM {q(sequence)}").one()))
    return state


def stored_columns(conn: Connection, schema: str, table: str) -> str:
    """The columns of ``table`` an ``INSERT`` may write (generated ones are computed), quoted,
    in order."""
    quote = conn.dialect.identifier_preparer.quote
    names = conn.execute(
        text(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :s "
            "AND TABLE_NAME = :t AND EXTRA NOT LIKE :g ORDER BY ORDINAL_POSITION"
        ),
        {"s": schema, "t": table, "g": "%GENERATED%"},
    ).scalars()
    return ", ".join(quote(str(n)) for n in names)


def _rows(conn: Connection, schema: str, table: str) -> tuple[str, list[tuple[Any, ...]]]:
    """``table``'s writable columns and its rows, to insert them again."""
    columns = stored_columns(conn, schema, table)
    source = _qualifier(conn, schema)(table)
    rows = [tuple(r) for r in conn.exec_driver_sql(f"SELECT {columns} FROM {source}")]
    return columns, rows


def end_sessions(conn: Connection, schema: str) -> None:
    """Kill what the test left connected (an open transaction holds its locks), and wait
    until those sessions are gone: a killed session first rolls its transaction back."""
    left = conn.execute(_OTHER_SESSIONS, {"s": schema}).all()
    for (session,) in left:
        with contextlib.suppress(exc.DBAPIError):  # already gone
            conn.exec_driver_sql(f"KILL CONNECTION {int(session)}")
    if not left:
        return

    def gone() -> bool | None:
        left = conn.execute(_OTHER_SESSIONS, {"s": schema}).first()
        conn.rollback()
        return True if left is None else None

    poll(
        gone,
        _SESSIONS_GONE_SECONDS,
        lambda: TimeoutError("a test's session did not end"),
        first=0.002,
    )
