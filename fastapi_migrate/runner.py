"""``migrate``: bring the database to the target revision, safely, once per start.

Plain functions over ``MigrateSettings``; FastAPI, the CLI and pytest are adapters on top.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext, suppress

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .alembic_run import alembic_config, failed_revision, load_scripts, run_upgrade, stamp
from .autocommit import autocommit_hint
from .backup import backup_sqlite
from .database import Database, DedicatedConnection
from .ddl_session import ddl_lock_timeout, failure_hint
from .errors import (
    LockTimeout,
    MigrationError,
    MigrationFailed,
    PendingMigrations,
    UnversionedDatabase,
)
from .fast_path import at_target, check_noop, noop_start
from .half_applied import half_applied_hint
from .lock import WaitEnded, migration_lock, waiting_ends_when
from .metadata import require_tables, resolve_metadata
from .plan import MigrationPlan, format_revisions, plan_migration
from .result import MigrationResult
from .settings import MigrateSettings
from .state import DatabaseState, read_revisions, read_state

log = logging.getLogger("fastapi_migrate")


def migrate(
    settings: MigrateSettings | None = None, *, metadata: MetaData | None = None
) -> MigrationResult:
    """Run the startup logic of the settings' ``mode``; log and return what happened."""
    settings = settings if settings is not None else MigrateSettings()
    started = time.monotonic()
    if settings.mode == "off":
        result = MigrationResult("skipped", None, None, [], 0.0)
        log.info(result.summary())
        return result
    metadata = resolve_metadata(metadata, settings.metadata)
    if settings.trees:
        from .trees import migrate_trees  # it builds on this module

        result = migrate_trees(settings, metadata, started)
        log.info(result.summary())
        return result
    if settings.empty_database == "create_all":
        require_tables(metadata)
    cfg = alembic_config(settings, metadata=metadata)
    db = migration_database(settings)
    try:
        # At the target already (the common restart): one query, no revision file executed.
        check = check_noop(settings, cfg, db, started)
        if check.result is not None:
            result = check.result
        elif settings.mode == "upgrade" and check.reachable:
            result = _start_under_lock(settings, cfg, db, metadata, started, check.wanted)
        else:
            script = load_scripts(cfg)
            result = _Migrator(settings, script, metadata, started, db).run()
    finally:
        db.dispose()
    log.info(result.summary())
    return result


def migration_database(settings: MigrateSettings) -> Database:
    """The database a start works on: ``DATABASE_URL`` in the modes that never run DDL."""
    read_only = settings.mode in ("wait", "check")
    url = settings.database_url if read_only else settings.ddl_url
    assert url is not None  # MigrateSettings refuses a missing URL unless mode is off
    variable = (
        "DATABASE_URL" if read_only or not settings.migrate_database_url else "MIGRATE_DATABASE_URL"
    )
    return Database(url, variable=variable, connect_timeout=settings.connect_timeout)


def _start_under_lock(
    settings: MigrateSettings,
    cfg: Config,
    db: Database,
    metadata: MetaData | None,
    started: float,
    wanted: tuple[str, ...] | None,
) -> MigrationResult:
    """Take the lock before executing any revision file: a start that waited for another's
    migration ends, as soon as the database is at the target, at the cost of one query (on a
    connection kept for the wait, when the target is known without loading the scripts)."""
    reached: list[MigrationResult] = []

    with ExitStack() as held:
        with ExitStack() as waiting:
            readers: list[DedicatedConnection] = []  # opened at the first check, kept for the rest

            def reached_target() -> bool:
                found = None
                if wanted:
                    # No version table yet, or no connection: not known to be there yet.
                    with suppress(SQLAlchemyError, OSError):
                        if not readers:
                            readers.append(waiting.enter_context(db.connection(autocommit=True)))
                        found = at_target(readers[0], settings, wanted, started)
                else:
                    found = noop_start(settings, cfg, db, started)
                reached[:] = [found] if found is not None else []
                return bool(reached)

            try:
                with waiting_ends_when(reached_target):
                    held.enter_context(_migration_lock(db, settings))
            except WaitEnded:
                return reached[0]
            if reached_target():
                return reached[0]
        script = load_scripts(cfg)
        return _Migrator(settings, script, metadata, started, db, locked=True).run()


def _migration_lock(db: Database, settings: MigrateSettings) -> AbstractContextManager[None]:
    return migration_lock(
        db,
        version_table=settings.version_table,
        version_table_schema=settings.version_table_schema,
        timeout=settings.lock_timeout,
        enabled=settings.lock,
    )


class _Migrator:
    """One start: holds the open ``Database`` and the scripts while the steps run."""

    def __init__(
        self,
        settings: MigrateSettings,
        script: ScriptDirectory,
        metadata: MetaData | None,
        started: float,
        db: Database | None = None,
        *,
        locked: bool = False,
    ) -> None:
        self.settings = settings
        self.script = script
        self.metadata = metadata
        self.started = started
        self.db = db
        self.locked = locked  # the caller holds the migration lock already

    def _state(self, db: Database) -> DatabaseState:
        s = self.settings
        return db.run(
            lambda c: read_state(
                c, version_table=s.version_table, version_table_schema=s.version_table_schema
            )
        )

    def _plan(self, state: DatabaseState) -> MigrationPlan:
        s = self.settings
        return plan_migration(
            state,
            self.script,
            target=s.target,
            empty_database=s.empty_database,
            baseline=s.baseline,
            unknown_revision=s.unknown_revision,
        )

    def _result(self, plan: MigrationPlan, action: str, applied: list[str]) -> MigrationResult:
        return MigrationResult(
            action,  # type: ignore[arg-type]
            plan.from_revision,
            plan.to_revision,
            applied,
            round(time.monotonic() - self.started, 4),
        )

    def run(self) -> MigrationResult:
        s = self.settings
        db = self.db if self.db is not None else migration_database(s)
        try:
            db.wait_until_reachable(s.connect_timeout)
            plan = self._plan(self._state(db))
            if plan.action == "noop":
                return self._result(plan, "noop", [])
            if s.mode == "check":
                raise PendingMigrations(
                    f"the database is at {plan.from_revision or 'no revision'}, not at "
                    f"{plan.to_revision}: {len(plan.pending)} migration(s) pending "
                    f"({', '.join(plan.pending)}); MIGRATE_MODE=check never migrates"
                )
            if s.mode == "wait":
                return self._wait(db, plan)
            with nullcontext() if self.locked else _migration_lock(db, s):
                # Another process may have migrated while we waited for the lock.
                plan = self._plan(self._state(db))
                if plan.action == "noop":
                    return self._result(plan, "noop", [])
                applied = self._execute(db, plan)
            return self._result(plan, plan.action, applied)
        finally:
            if self.db is None:  # a Database passed in is the caller's to dispose
                db.dispose()

    def _wait(self, db: Database, first: MigrationPlan) -> MigrationResult:
        """Poll, never writing, until another process has brought the database to target."""
        s = self.settings
        deadline = time.monotonic() + s.lock_timeout
        delay = 0.1
        plan = first
        problem = ""
        log.info(
            "MIGRATE_MODE=wait: database at %s, waiting up to %gs for %s",
            first.from_revision or "no revision",
            s.lock_timeout,
            first.to_revision,
        )
        while plan.action != "noop":
            if time.monotonic() + delay > deadline:
                raise LockTimeout(
                    f"MIGRATE_MODE=wait: the database is still at "
                    f"{plan.from_revision or 'no revision'}, not {plan.to_revision}, after "
                    f"{s.lock_timeout:g}s (MIGRATE_LOCK_TIMEOUT); run the migration "
                    "(fastapi-migrate upgrade) or start one app with MIGRATE_MODE=upgrade"
                    f"{problem}"
                )
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 1.5, 2.0)
            try:
                plan = self._plan(self._state(db))
            except UnversionedDatabase:
                continue  # a release job with MIGRATE_BASELINE may adopt it yet
            except DBAPIError as error:  # a busy SQLite file, a restarting server: poll on
                reason = db.redact((str(error.orig or error).strip() or "error").splitlines()[0])
                problem = f"; last read failed: {reason}"
                log.debug("MIGRATE_MODE=wait: reading the database failed, retrying%s", problem)
            else:
                problem = ""
        return self._result(first, "waited", [])

    def _execute(self, db: Database, plan: MigrationPlan) -> list[str]:
        """Apply ``plan`` under the lock; any failure becomes ``MigrationFailed``."""
        s = self.settings
        applied: list[str] = []
        if s.backup_dir is not None and db.dialect_name == "sqlite" and db.url.database:
            label = plan.from_revision or "empty"
            backup = backup_sqlite(db.url.database, s.backup_dir, label.replace(",", "+"))
            if backup is not None:
                log.info("backed up %s to %s before migrating", db.url.database, backup)

        def applied_one(revision: str, seconds: float) -> None:
            applied.append(revision)
            log.debug("applied revision %s in %.3fs", revision, seconds)

        try:
            with ddl_lock_timeout(s.ddl_lock_timeout), db.connection() as conn:
                if plan.baseline is not None:
                    baseline = plan.baseline
                    conn.run(lambda c: stamp(c, self.script, s, baseline))
                    log.info("stamped unversioned database at baseline %s", baseline)
                if plan.create_all:
                    metadata = require_tables(self.metadata)
                    conn.run(lambda c: self._create_all(c, metadata))
                    applied.extend(plan.pending)
                else:
                    self._upgrade(conn.sync_connection, applied_one)
            self._verify(db, plan)
        except MigrationError:
            raise
        except Exception as error:
            raise self._failure(db, plan, applied, error) from _redacted_cause(db, error)
        return applied

    def _create_all(self, connection: Connection, metadata: MetaData) -> None:
        """Tables from the models and the version stamp, in one transaction where DDL allows."""
        metadata.create_all(connection)
        stamp(connection, self.script, self.settings, self.settings.target)

    def _upgrade(
        self, connection: Connection | None, applied_one: Callable[[str, float], None]
    ) -> None:
        """Run ``env.py``, on our connection inside our transaction where it can take it."""
        s = self.settings
        cfg = alembic_config(s, metadata=self.metadata, connection=connection)
        if connection is None:  # async driver: env.py opens its own connection
            run_upgrade(cfg, self.script, s, s.target, applied_one)
            return
        # env.py's context.begin_transaction() owns the transaction (an outer one would break
        # autocommit_block); whatever an env.py left open without committing is committed here.
        try:
            run_upgrade(cfg, self.script, s, s.target, applied_one)
        except BaseException:
            if connection.in_transaction():
                connection.rollback()
            raise
        if connection.in_transaction():
            connection.commit()

    def _verify(self, db: Database, plan: MigrationPlan) -> None:
        """``env.py`` may ignore the URL it is given: check that the database really moved."""
        s = self.settings
        now = db.run(
            lambda c: read_revisions(
                c, version_table=s.version_table, version_table_schema=s.version_table_schema
            )
        )
        if set(now) != set(plan.target_revisions):
            raise MigrationFailed(
                f"env.py finished, but the database is at {format_revisions(now) or 'no revision'}"
                f", not {plan.to_revision}: does env.py use the URL and connection "
                "fastapi-migrate gives it (config.attributes['connection'], sqlalchemy.url)?",
                revision=None,
                current_revision=format_revisions(now),
            )

    def _failure(
        self, db: Database, plan: MigrationPlan, applied: list[str], error: BaseException
    ) -> MigrationFailed:
        failed = None if plan.create_all else failed_revision(error, self.script, plan.pending)
        if failed is None and not plan.create_all and len(applied) < len(plan.pending):
            failed = plan.pending[len(applied)]
        what = (
            "MIGRATE_EMPTY_DATABASE=create_all" if plan.create_all else f"revision {failed or '?'}"
        )
        s = self.settings
        try:
            left = format_revisions(
                db.run(
                    lambda c: read_revisions(
                        c,
                        version_table=s.version_table,
                        version_table_schema=s.version_table_schema,
                    )
                )
            )
            where = f"the database is left at {left or 'no revision'}"
        except Exception:
            left = None
            where = "the database could not be read afterwards"
        hint = failure_hint(error, s) + autocommit_hint(db, self.script, failed)
        half_applied = half_applied_hint(
            error,
            dialect=db.dialect_name,
            failed=failed,
            first_pending=plan.pending[0] if plan.pending else None,
            left_at=left,
        )
        if half_applied is not None:
            hint += half_applied
        elif db.dialect_name in ("mysql", "mariadb") and (failed is not None or plan.create_all):
            hint += (
                f"; MySQL/MariaDB commit each DDL statement, so {what} may be "
                "half-applied: undo or finish its statements by hand, then start again"
            )
        reason = db.redact(f"{type(error).__name__}: {error}".splitlines()[0])
        return MigrationFailed(
            f"{what} failed: {reason}; {where}{hint}",
            revision=failed,
            current_revision=left,
        )


def _redacted_cause(db: Database, error: BaseException) -> BaseException:
    """``error`` if its printed traceback shows no password, else a redacted stand-in for it
    with the same frames (uvicorn prints the whole chain of a failed startup)."""
    printed = "".join(traceback.format_exception(error))
    if db.redact(printed) == printed:
        return error
    stand_in = RuntimeError(db.redact(f"{type(error).__name__}: {error}"))
    return stand_in.with_traceback(error.__traceback__)
