"""What a failed revision that uses ``autocommit_block()`` leaves behind, for its error message.

Statements inside Alembic's ``op.get_context().autocommit_block()`` (PostgreSQL's ``CREATE INDEX
CONCURRENTLY``, ``ALTER TYPE ... ADD VALUE`` before version 12) run outside the migration's
transaction: when the revision fails, the ones that ran stay, and a failed ``CREATE INDEX
CONCURRENTLY`` leaves an INVALID index that a retry trips over (or, with ``IF NOT EXISTS``,
silently keeps). The migration lock is a session lock, so it is held throughout all the same.
"""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from .database import Database

_INVALID_INDEXES = text(
    "SELECT n.nspname || '.' || c.relname FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE NOT i.indisvalid ORDER BY 1"
)


def autocommit_hint(db: Database, script: ScriptDirectory, revision: str | None) -> str:
    """A hint for ``MigrationFailed`` when ``revision`` has an autocommit block; else empty."""
    if revision is None or "autocommit_block" not in _source(script, revision):
        return ""
    hint = (
        "; its autocommit_block() statements ran outside the migration's transaction, so "
        "those that ran before the failure stay applied: undo them, or make them idempotent "
        "(e.g. ADD VALUE IF NOT EXISTS), before starting again"
    )
    if db.dialect_name == "postgresql":
        invalid = _invalid_indexes(db)
        if invalid:
            hint += (
                f"; INVALID index(es), as a failed CREATE INDEX CONCURRENTLY leaves: "
                f"{', '.join(invalid)} (DROP INDEX CONCURRENTLY before starting again)"
            )
    return hint


def _source(script: ScriptDirectory, revision: str) -> str:
    try:
        found = script.get_revision(revision)
        return Path(found.path).read_text() if found is not None and found.path else ""
    except Exception:  # a hint is never worth a second error
        return ""


def _invalid_indexes(db: Database) -> list[str]:
    def query(connection: Connection) -> list[str]:
        return [str(row[0]) for row in connection.execute(_INVALID_INDEXES)]

    try:
        return db.run(query)
    except Exception:
        return []
