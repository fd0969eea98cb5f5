"""``migration_failed``: the one message of a failed migration, and what to do about it.

It says which revision failed (read from the traceback, else the first one not applied), or that
``env.py`` failed outside Alembic's ``run_migrations`` (an import, its logging setup, its engine:
no revision is to blame), where the database was left, and the hints that apply: a DDL lock
timeout, a missing privilege, statements of an ``autocommit_block()`` that stayed applied, and
what the database itself adds (``Backend.failure_hint``: MySQL's half-applied revisions,
PostgreSQL's INVALID indexes).
"""

from __future__ import annotations

import traceback
from pathlib import Path

from alembic.script import ScriptDirectory

from ..backends.base import Failure
from ..backends.database import Database
from ..foundation.errors import MigrationFailed
from ..foundation.redaction import error_line
from ..foundation.settings import MigrateSettings
from ..glue.run import failed_outside_migrations, failed_revision
from .plan import MigrationPlan, format_revisions
from .version_table import VersionTable

_TIMEOUT_MARKERS = ("lock timeout", "lock wait timeout exceeded")
_PRIVILEGE_MARKERS = ("permission denied", "command denied", "must be owner")


def migration_failed(
    db: Database,
    settings: MigrateSettings,
    script: ScriptDirectory,
    plan: MigrationPlan,
    applied: list[str],
    error: BaseException,
    *,
    blockers: str | None = None,
) -> MigrationFailed:
    """The ``MigrationFailed`` for ``error``, raised while applying ``plan``; ``blockers``:
    who held the table lock its last attempt waited for, when that was a lock timeout."""
    failed = None if plan.create_all else failed_revision(error, script, plan.pending)
    in_env_py = not plan.create_all and failed is None and failed_outside_migrations(error)
    if failed is None and not (plan.create_all or in_env_py) and len(applied) < len(plan.pending):
        failed = plan.pending[len(applied)]
    when = ""
    if plan.create_all:
        what = "MIGRATE_EMPTY_DATABASE=create_all"
    elif in_env_py:
        what = f"env.py ({script.env_py_location})"
        when = f" after {', '.join(applied)} ran" if applied else " before any revision ran"
    else:
        what = f"revision {failed or '?'}"
    table = VersionTable(settings.version_table, settings.version_table_schema)
    try:
        left = format_revisions(db.run(table.read_if_present))
        where = f"the database is left at {left or 'no revision'}"
    except Exception:
        left = None
        where = "the database could not be read afterwards"
    uses_autocommit = failed is not None and "autocommit_block" in _source(script, failed)
    failure = Failure(
        error=error,
        what=what,
        revision=failed,
        first_pending=plan.pending[0] if plan.pending else None,
        left_at=left,
        autocommit_block=uses_autocommit,
    )
    hint = _lock_or_privilege_hint(error, settings, blockers)
    if uses_autocommit:
        hint += (
            "; its autocommit_block() statements ran outside the migration's transaction, so "
            "those that ran before the failure stay applied: undo them, or make them idempotent "
            "(e.g. ADD VALUE IF NOT EXISTS), before starting again"
        )
    hint += db.backend.failure_hint(failure, db)
    return MigrationFailed(
        f"{what} failed{when}: {error_line(error, [db.url])}; {where}{hint}",
        revision=failed,
        current_revision=left,
    )


def _lock_or_privilege_hint(
    error: BaseException, settings: MigrateSettings, blockers: str | None
) -> str:
    """What to do about a revision that failed for a table lock or a privilege; else empty."""
    text = str(error).lower()
    if settings.ddl_lock_timeout > 0 and any(m in text for m in _TIMEOUT_MARKERS):
        retries = settings.ddl_lock_retries
        tries = (
            f"{retries + 1} attempts (MIGRATE_DDL_LOCK_RETRIES={retries})"
            if retries
            else "its only attempt (MIGRATE_DDL_LOCK_RETRIES=0)"
        )
        return (
            f"; on {tries} it waited more than {settings.ddl_lock_timeout:g}s "
            "(MIGRATE_DDL_LOCK_TIMEOUT) for a table lock held by another transaction"
            f"{'; last attempt ' + blockers if blockers else ''}: start again once that "
            "transaction ends, or raise the timeout or the retries"
        )
    if any(m in text for m in _PRIVILEGE_MARKERS):
        if settings.migrate_database_url:
            return "; the role of MIGRATE_DATABASE_URL lacks a privilege this revision needs"
        return (
            "; the role of DATABASE_URL may not run DDL: set MIGRATE_DATABASE_URL to the URL "
            "of a role that owns the schema (the app keeps DATABASE_URL for its queries)"
        )
    return ""


def _source(script: ScriptDirectory, revision: str) -> str:
    try:
        found = script.get_revision(revision)
        return Path(found.path).read_text() if found is not None and found.path else ""
    except Exception:  # a hint is never worth a second error
        return ""


def redacted_cause(db: Database, error: BaseException) -> BaseException:
    """``error`` if its printed traceback shows no password, else a redacted stand-in for it
    with the same frames (uvicorn prints the whole chain of a failed startup)."""
    printed = "".join(traceback.format_exception(error))
    if db.redact(printed) == printed:
        return error
    stand_in = RuntimeError(db.redact(f"{type(error).__name__}: {error}"))
    return stand_in.with_traceback(error.__traceback__)
