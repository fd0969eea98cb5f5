"""Reuse a PostgreSQL test database: prove it is back in a fresh copy's state, or say it is not.

``CREATE DATABASE ... TEMPLATE`` costs hundreds of milliseconds on a schema of 200 tables, while
most tests write a few rows. After a test, ``restore`` compares the database with what a fresh
copy looked like (``snapshot``) and puts back what a test commonly changes:

- the schema, grants, comments, database settings: one query decompiles the catalog of every
  user object (``pg_get_constraintdef``, ``pg_get_indexdef``...) into text and hashes it. Any
  difference (DDL, ``GRANT``, even a column added then dropped) means: not reusable;
- rows: a table whose file is still empty (``pg_relation_size`` 0) has none; the others that
  were empty in the copy are checked for rows, and those that had rows are hashed whole. A
  table that differs is emptied (children before parents), and the rows the copy had (the
  migrations' seed data, kept as text) are inserted again, parents first;
- sequences (``serial``, identity): every one is set back with ``setval``, which costs less than
  reading them (a sequence's ``log_cnt``, WAL bookkeeping, is the one thing that may differ).

From the second reset of a database on, PostgreSQL 15 and later (cumulative statistics in
shared memory, flushed by a session before it is gone) first read how many rows were inserted,
updated or deleted in every table and catalog since the last reset: a catalog nobody wrote needs
neither the signature nor the fingerprint, and a table nobody wrote is still as the last reset
left it. That costs half a millisecond where the signature costs six (200 tables). What the
shared catalogs hold of the database (``ALTER DATABASE``, its grants and comment: no counter of
its own moves) is hashed every time. Where the counters cannot be trusted (``track_counts`` off,
an older server, statistics reset since, to the microsecond) the full comparison runs. The
reset's own deletes are followed too: the tables its transaction wrote (what a cascade or a
trigger reached) are checked after it, and reset in turn. What it does not see: a test that
turns ``track_counts`` off in its own session (a superuser's ``SET``) and then writes.

Sessions the test left open are ended first. After the reset the rows are checked again (a
``DELETE`` may fire a trigger that writes elsewhere): anything short of equal, any error, and the
caller drops the database and copies it afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from ..foundation.retry import poll
from .base import children_first

FINGERPRINT = r"""
SELECT md5(string_agg(x, E'\n' ORDER BY x)) FROM (
 SELECT concat_ws(' ', 'n', nspname, nspowner::regrole, nspacl) FROM pg_namespace
  WHERE oid >= 16384 OR nspname = 'public'
 UNION ALL SELECT concat_ws(' ', 'c', oid::regclass, relkind, relowner::regrole, relacl, reloptions,
  relpersistence, relrowsecurity, relforcerowsecurity, relreplident, relispartition,
  pg_get_expr(relpartbound, oid), reloftype::regtype, relam) FROM pg_class WHERE oid >= 16384
 UNION ALL SELECT concat_ws(' ', 'a', attrelid::regclass, attnum, attname,
  format_type(atttypid, atttypmod), attnotnull, attisdropped, attidentity, attgenerated,
  attcollation, attacl, attoptions, attstattarget, pg_get_expr(d.adbin, d.adrelid))
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE attrelid >= 16384 AND attnum > 0
 UNION ALL SELECT concat_ws(' ', 'k', conrelid::regclass, contypid::regtype, conname,
  pg_get_constraintdef(oid), condeferrable, condeferred, convalidated) FROM pg_constraint
  WHERE oid >= 16384
 UNION ALL SELECT concat_ws(' ', 'i', pg_get_indexdef(indexrelid), indisclustered, indisreplident)
  FROM pg_index WHERE indexrelid >= 16384
 UNION ALL SELECT concat_ws(' ', 't', oid::regtype, typowner::regrole, typacl, typtype, typnotnull,
  pg_get_expr(typdefaultbin, 0)) FROM pg_type WHERE oid >= 16384
 UNION ALL SELECT concat_ws(' ', 'e', enumtypid::regtype, enumsortorder, enumlabel) FROM pg_enum
  WHERE oid >= 16384
 UNION ALL SELECT concat_ws(' ', 'f', oid::regprocedure, proowner::regrole, proacl, prokind,
  provolatile, prosecdef, proconfig, md5(prosrc), prorettype::regtype) FROM pg_proc
  WHERE oid >= 16384
 UNION ALL SELECT concat_ws(' ', 'g', pg_get_triggerdef(oid), tgenabled) FROM pg_trigger
  WHERE oid >= 16384 AND NOT tgisinternal
 UNION ALL SELECT concat_ws(' ', 'r', pg_get_ruledef(oid), ev_enabled) FROM pg_rewrite
  WHERE oid >= 16384
 UNION ALL SELECT concat_ws(' ', 's', seqrelid::regclass, seqtypid::regtype, seqstart,
  seqincrement, seqmax, seqmin, seqcache, seqcycle) FROM pg_sequence
 UNION ALL SELECT concat_ws(' ', 'p', polrelid::regclass, polname, polcmd, polpermissive,
  polroles::text, pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid))
  FROM pg_policy
 UNION ALL SELECT concat_ws(' ', 'd', classoid::regclass, objsubid, description,
  CASE WHEN classoid = 'pg_class'::regclass THEN objoid::regclass::text
   WHEN classoid = 'pg_namespace'::regclass THEN objoid::regnamespace::text
   ELSE objoid::text END) FROM pg_description
  WHERE objoid >= 16384 OR classoid = 'pg_namespace'::regclass
 UNION ALL SELECT concat_ws(' ', 'x', extname, extversion, extnamespace::regnamespace)
  FROM pg_extension
 UNION ALL SELECT concat_ws(' ', 'D', datacl, datdba::regrole, datconnlimit, datallowconn)
  FROM pg_database WHERE datname = current_database()
 UNION ALL SELECT concat_ws(' ', 'S', setrole, setconfig) FROM pg_db_role_setting
  WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
 UNION ALL SELECT concat_ws(' ', 'A', defaclrole::regrole, defaclnamespace::regnamespace,
  defaclobjtype, defaclacl) FROM pg_default_acl
 UNION ALL SELECT concat_ws(' ', 'L', count(*)) FROM pg_largeobject_metadata
 UNION ALL SELECT concat_ws(' ', 'P', count(*)) FROM pg_publication
) AS catalog(x)
"""
"""Every user object of the database as text, hashed: equal hashes, equal schemas and grants.

OIDs of user objects start at 16384 (``FirstNormalObjectId``); objects are named, never
numbered, so a table dropped and made again the same way compares equal."""

_TABLES = """
SELECT c.oid::regclass::text, c.relam = (SELECT oid FROM pg_am WHERE amname = 'heap')
  AND pg_relation_size(c.oid) = 0
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.oid >= 16384 AND left(n.nspname, 3) <> 'pg_'
ORDER BY 1
"""
"""Every table (partitions included, their parents hold no rows), and whether it provably has
no rows: its file holds no page."""

_SEQUENCES = "SELECT seqrelid::regclass::text FROM pg_sequence ORDER BY 1"

_FOREIGN_KEYS = """
SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint
WHERE contype = 'f' AND conrelid <> confrelid
"""

_OTHER_SESSIONS = text(
    "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
)


_SESSIONS_GONE_SECONDS = 10.0


_CATALOGS = """
SELECT relname FROM pg_class WHERE relnamespace = 'pg_catalog'::regnamespace AND relkind = 'r'
  AND NOT relisshared AND relname NOT IN ('pg_statistic', 'pg_statistic_ext_data')
ORDER BY 1
"""
"""The database's own catalogs, but the planner's statistics (``ANALYZE`` rewrites them)."""

_DATABASE_ROW = """
SELECT 'database', 1, hashtext(concat_ws(' ', d.datacl, d.datdba, d.datconnlimit, d.datallowconn,
  shobj_description(d.oid, 'pg_database'),
  (SELECT string_agg(concat_ws(' ', setrole, setconfig), ' ') FROM pg_db_role_setting
   WHERE setdatabase = d.oid)))::bigint
FROM pg_database d WHERE d.datname = current_database()
"""

COVERED = frozenset(
    {
        "pg_attrdef",
        "pg_attribute",
        "pg_class",
        "pg_constraint",
        "pg_default_acl",
        "pg_description",
        "pg_enum",
        "pg_index",
        "pg_namespace",
        "pg_policy",
        "pg_proc",
        "pg_rewrite",
        "pg_sequence",
        "pg_trigger",
        "pg_type",
    }
)
"""Catalogs whose every user-visible column ``FINGERPRINT`` decompiles: a change there alone
(``TRUNCATE`` gives a table a new file, ``GRANT`` then ``REVOKE``) is judged by the fingerprint.
A change in any other catalog (``pg_depend``: objects made or dropped) means not reusable."""

Signature = dict[str, str]
"""Per catalog: its row count and a sum of its rows' ``xmin`` hashes. A row inserted or
updated gets a new ``xmin``; a deleted one changes the count."""

_ENDED, _PREPARED_LEFT = " sessions ended", " prepared transactions"
_END_SESSIONS = f"""
SELECT true, '{_ENDED}', (SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid())
UNION ALL SELECT true, '{_PREPARED_LEFT}',
  (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())
UNION ALL"""
"""The first rows of ``_ACTIVITY`` in a reset: the other sessions ended, prepared transactions."""

_ACTIVITY = """
SELECT c.relnamespace = 'pg_catalog'::regnamespace, c.oid::regclass::text,
  pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
  + pg_stat_get_tuples_deleted(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND NOT c.relisshared
  AND (c.oid >= 16384 AND left(n.nspname, 3) <> 'pg_' OR n.nspname = 'pg_catalog'
   AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data'))
  AND current_setting('track_counts') = 'on'
  AND current_setting('server_version_num')::int >= 150000
UNION ALL SELECT true, ' reset at', (extract(epoch FROM stats_reset) * 1000000)::bigint
FROM pg_stat_database WHERE datname = current_database()
UNION ALL SELECT true, ' database', hashtext(concat_ws(' ', d.datacl, d.datdba, d.datconnlimit,
  d.datallowconn, shobj_description(d.oid, 'pg_database'),
  (SELECT string_agg(concat_ws(' ', setrole, setconfig), ' ' ORDER BY setrole)
   FROM pg_db_role_setting WHERE setdatabase = d.oid)))::bigint
FROM pg_database d WHERE d.datname = current_database()
"""
"""Per table and catalog (not the planner's statistics): rows inserted, updated or deleted so far,
by every session that has ended; when the database's counters were last reset, to the
microsecond (any reset, of one table too, moves it); and a hash of what the shared catalogs hold
of this database (its grants, owner, comment, settings: ``ALTER DATABASE`` writes no counter
here). Only the last two rows where the counters are not kept."""

_NOT_CATALOGS = frozenset({" reset at", " database"})

_WRITTEN_NOW = """
SELECT c.oid::regclass::text FROM pg_class c
WHERE c.relkind = 'r' AND c.oid >= 16384 AND pg_stat_get_xact_tuples_inserted(c.oid)
  + pg_stat_get_xact_tuples_updated(c.oid) + pg_stat_get_xact_tuples_deleted(c.oid) > 0
"""
"""The tables this transaction wrote so far: the reset's own deletes, and what they cascaded
to or fired triggers into."""

_RESET_ROUNDS = 3


@dataclass(frozen=True)
class Activity:
    """What ``_ACTIVITY`` read: the catalogs' counters (with the reset time), the tables'."""

    catalogs: dict[str, int | None]
    tables: dict[str, int]


@dataclass(frozen=True)
class Proven:
    """A database as its last reset left it, proven equal to a fresh copy."""

    signature: Signature
    """Its catalogs' signature."""
    activity: Activity | None
    """The row counters read after the test's sessions ended, before the reset wrote; None
    where they cannot be trusted."""


@dataclass(frozen=True)
class Snapshot:
    """A fresh copy, as ``restore`` compares with it."""

    signature_query: str
    signature: Signature
    fingerprint: str
    tables: tuple[str, ...]
    """Every table, children before the tables they reference: the order rows are deleted in."""
    rows: dict[str, str]
    """The tables that had rows: a hash of them."""
    seeded: dict[str, tuple[str, list[str]]]
    """The same tables: the columns an ``INSERT`` may write, and every row as text."""
    sequences: str
    """``VALUES`` of every sequence's name, value and ``is_called``, for ``setval``."""


def snapshot(conn: Connection) -> Snapshot:
    """Read a fresh copy (nobody else connected): what every later reset must give back."""
    conn.execution_options(no_parameters=True)  # a '%' in a table's name stays a '%'
    catalogs = conn.exec_driver_sql(_CATALOGS).scalars()
    signature_query = " UNION ALL ".join(
        [
            f"SELECT '{name}', count(*), sum(hashtext(xmin::text)::bigint) FROM pg_catalog.{name}"
            for name in catalogs
        ]
        + [_DATABASE_ROW]
    )
    fingerprint = str(conn.exec_driver_sql(FINGERPRINT).scalar())
    tables = [str(name) for name, _empty in conn.exec_driver_sql(_TABLES)]
    references = [tuple(row) for row in conn.exec_driver_sql(_FOREIGN_KEYS)]
    rows = {t: h for t, h in _row_hashes(conn, tables, hashed=set(tables)).items() if h}
    seeded = {t: _rows_as_text(conn, t) for t in rows}
    values = []
    for sequence in conn.exec_driver_sql(_SEQUENCES).scalars():
        last, called = conn.exec_driver_sql(f"SELECT last_value, is_called FROM {sequence}").one()
        values.append(f"({_literal(sequence)}, {int(last)}, {'true' if called else 'false'})")
    signature = _signature(conn, signature_query)
    conn.rollback()
    return Snapshot(
        signature_query,
        signature,
        fingerprint,
        children_first(tables, references),
        rows,
        seeded,
        ", ".join(values),
    )


def restore(
    conn: Connection, database: str, fresh: Snapshot, known: Proven | None
) -> Proven | None:
    """Bring ``database`` (``conn``'s) back to ``fresh``: what to pass as ``known`` next time;
    None when that cannot be proven (drop it). ``known``: what the last reset that proved this
    database equal to a fresh copy returned (None: a fresh copy's)."""
    conn.execution_options(no_parameters=True)
    ended, prepared, activity = _sessions_and_activity(conn)
    for _ in range(_RESET_ROUNDS):
        if not ended:
            break
        _wait_until_gone(conn, database)  # the counters are complete once they are gone
        ended, prepared, activity = _sessions_and_activity(conn)
    if ended or prepared:
        return None  # sessions that keep coming back, or a prepared transaction: drop it
    before = known.activity if known is not None else None
    if activity is not None and before is not None and activity.catalogs == before.catalogs:
        signature = known.signature if known is not None else fresh.signature
        # No catalog written: the same tables; only those written since can have changed.
        maybe_rows = [t for t in fresh.tables if activity.tables.get(t) != before.tables.get(t)]
    else:
        signature = _signature(conn, fresh.signature_query)
        if not _same_schema(conn, signature, known.signature if known else fresh.signature, fresh):
            return None
        maybe_rows = [
            t for t, empty in conn.exec_driver_sql(_TABLES) if not empty or t in fresh.rows
        ]
    dirty = _changed(conn, maybe_rows, fresh)
    for _ in range(_RESET_ROUNDS):
        # Sequences are set back every time: nextval() writes no table.
        touched = _reset_rows(conn, fresh, dirty)
        if dirty:  # what the deletes cascaded to (or a trigger wrote) is checked too
            dirty = _changed(conn, sorted(set(maybe_rows) | dirty | touched), fresh)
            conn.rollback()
        if not dirty:
            return Proven(signature, activity)
    return None


def _reset_rows(conn: Connection, fresh: Snapshot, dirty: set[str]) -> set[str]:
    """Empty the ``dirty`` tables, children first, insert their seed rows again, parents first,
    set every sequence back, and commit; the tables the transaction wrote, cascades included."""
    # A test database's reset needs no durability: do not wait for the WAL to reach the disk.
    # One round trip for what takes no parameter (each is one more wait for this thread).
    writes = ["SET LOCAL synchronous_commit = off"]
    writes += [f"DELETE FROM {table}" for table in fresh.tables if table in dirty]
    if fresh.sequences:
        writes.append(
            "SELECT count(setval(CAST(s AS regclass), v, c)) "
            f"FROM (VALUES {fresh.sequences}) AS f(s, v, c)"
        )
    conn.exec_driver_sql("; ".join(writes))
    for table in reversed(fresh.tables):  # parents first
        if table in dirty and table in fresh.seeded:
            columns, rows = fresh.seeded[table]
            conn.execute(
                text(
                    f"INSERT INTO {table} ({columns}) OVERRIDING SYSTEM VALUE "
                    f"SELECT {columns} FROM (SELECT (CAST(r AS {table})).* "
                    "FROM unnest(CAST(:rows AS text[])) AS r) AS seeded"
                ),
                {"rows": rows},
            )
    touched = {str(name) for name in conn.exec_driver_sql(_WRITTEN_NOW).scalars()}
    conn.commit()
    return touched


def _same_schema(conn: Connection, signature: Signature, known: Signature, fresh: Snapshot) -> bool:
    """Whether the catalogs are still a fresh copy's: the same signature, or only changes in
    catalogs the fingerprint covers and the same fingerprint."""
    if signature == known:
        return True
    changed = {n for n in signature.keys() | known.keys() if signature.get(n) != known.get(n)}
    return changed <= COVERED and conn.exec_driver_sql(FINGERPRINT).scalar() == fresh.fingerprint


def _sessions_and_activity(conn: Connection) -> tuple[int, bool, Activity | None]:
    """In one statement: end the other sessions on the database (how many), whether a prepared
    transaction is left, and the row counters (None where the server does not keep them; not
    complete while an ended session is still going)."""
    catalogs: dict[str, int | None] = {}
    tables: dict[str, int] = {}
    ended, prepared = 0, False
    conn.rollback()  # the counters are read once per transaction: a new one
    for catalog, name, count in conn.exec_driver_sql(_END_SESSIONS + _ACTIVITY):
        if name == _ENDED:
            ended = int(count)
        elif name == _PREPARED_LEFT:
            prepared = bool(count)
        elif catalog:
            catalogs[str(name)] = None if count is None else int(count)
        else:
            tables[str(name)] = int(count)
    trusted = any(name not in _NOT_CATALOGS for name in catalogs)
    return ended, prepared, Activity(catalogs, tables) if trusted else None


def _signature(conn: Connection, query: str) -> Signature:
    found = {str(name): f"{count} {total}" for name, count, total in conn.exec_driver_sql(query)}
    conn.rollback()
    return found


def _changed(conn: Connection, tables: list[str], fresh: Snapshot) -> set[str]:
    """Which of ``tables`` differ from the fresh copy: rows where it had none, or other rows."""
    now = _row_hashes(conn, tables, hashed=set(fresh.rows))
    return {t for t in tables if now.get(t) != fresh.rows.get(t)}


def _rows_as_text(conn: Connection, table: str) -> tuple[str, list[str]]:
    """What puts ``table``'s rows back: its writable columns (not generated), and its rows in
    the order a scan returns them, each as the text of its row type (lossless for any type)."""
    columns = conn.execute(
        text(
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped "
            "AND attgenerated = ''"
        ),
        {"t": table},
    ).scalar_one()
    rows = conn.exec_driver_sql(f"SELECT CAST(r AS text) FROM {table} AS r").scalars()
    return str(columns), [str(row) for row in rows]


def _row_hashes(conn: Connection, tables: list[str], hashed: set[str]) -> dict[str, str | None]:
    """One query: a hash of the rows of the ``hashed`` tables, and for the others whether they
    have any (a marker); a table without rows is left out."""
    parts = []
    for i, table in enumerate(tables):
        if table in hashed:
            parts.append(
                f"SELECT {i}, (SELECT md5(string_agg(r::text, E'\\n' ORDER BY r::text)) "
                f"FROM {table} AS r)"
            )
        else:
            parts.append(f"SELECT {i}, 'rows' WHERE EXISTS (SELECT 1 FROM {table})")
    if not parts:
        return {}
    found = conn.exec_driver_sql(" UNION ALL ".join(parts))
    return {tables[i]: value for i, value in found if value is not None}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def end_sessions(conn: Connection, database: str) -> None:
    """End every other session on ``database`` (a test's open transaction holds locks, and a
    session still working could commit after our check; a template must have none to be
    copied), and wait until they are gone."""
    ended = conn.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :d AND pid <> pg_backend_pid()"
        ),
        {"d": database},
    ).all()
    conn.rollback()
    if ended:
        _wait_until_gone(conn, database)


def _wait_until_gone(conn: Connection, database: str) -> None:
    """Polled: ``pg_terminate_backend``'s own wait sleeps in steps of 100 ms."""

    def gone() -> bool | None:
        left = conn.execute(_OTHER_SESSIONS, {"d": database}).first()
        conn.rollback()
        return True if left is None else None

    timeout = TimeoutError(f"the sessions on {database} did not end")
    poll(gone, _SESSIONS_GONE_SECONDS, lambda: timeout, first=0.002)
