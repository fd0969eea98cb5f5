"""``migrate``: bring the database to the target revision, safely, once per start.

One path for every mode and for one tree or many (a start without ``MIGRATE_TREES`` is a list
of one tree):

    settings -> the state of every tree -> fast no-op -> lock -> read again -> plan each tree
    (pure) -> execute -> result

1. **Fast no-op.** Each tree's target is read from its revision files' text (``glue.heads``);
   one connection reads every version table. At the target: done, no revision file executed.
2. **Check and wait** never take the lock: they plan every tree, then fail (``check``) or poll
   until another process has brought every tree to its target (``wait``), retrying failed reads.
3. **Upgrade** takes the lock. A process that waits for it stops waiting as soon as the
   database reaches the target (another process migrated): one query per attempt. Once the
   lock is held the state is read again, every tree is planned before any runs (a tree that
   needs a human stops the start before anything is touched), then each plan is applied in
   order and checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol, TypeVar

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import SQLAlchemyError

from ..backends import backend_for
from ..backends.database import Database, DedicatedConnection
from ..backends.drivers import is_async_url, parse_url
from ..backends.sessions import migration_sessions
from ..backends.sqlite import is_locked
from ..foundation.errors import (
    LockLost,
    LockTimeout,
    MigrationError,
    MigrationFailed,
    PendingMigrations,
    UnsafeMigration,
    UnversionedDatabase,
)
from ..foundation.metadata import require_tables, resolve_metadata
from ..foundation.progress import RevisionProgress
from ..foundation.redaction import error_line
from ..foundation.result import MigrationResult, ResultAction
from ..foundation.retry import poll
from ..foundation.settings import MigrateSettings
from ..glue.config import alembic_config, load_scripts
from ..glue.heads import HeadsLookup, lookup_heads
from ..glue.run import run_on_connection, run_upgrade, stamp
from ..lint import Report, lint_pending
from .ddl_retry import give_way, is_lock_timeout, retried_statements
from .failure import migration_failed, redacted_cause
from .lock import LockKeeper, WaitEnded, guarded_commits, migration_lock
from .monitor import MigrationMonitor, describe
from .plan import MigrationPlan, format_revisions, plan_migration, resolve_target
from .seed import Seed, import_seed, run_seed, seed_name
from .version_table import DatabaseState, VersionTable, at_target, read_states

log = logging.getLogger("fastapi_migrate")

T = TypeVar("T")


class Runs(Protocol):
    """Runs a function on a connection: ``Database.run`` (a new one), or ``Start.read``."""

    def __call__(self, fn: Callable[[Connection], T]) -> T: ...


def migrate(
    settings: MigrateSettings | None = None,
    *,
    metadata: MetaData | None = None,
    seed: Seed | None = None,
) -> MigrationResult:
    """Run the startup logic of the settings' ``mode``; log and return what happened.
    ``seed`` (else ``MIGRATE_SEED``) runs after the migration, under the lock."""
    settings = settings if settings is not None else MigrateSettings()
    with begin(settings, metadata, seed) as start:
        result = start.run() if start is not None else skipped()
    log.info(result.summary())
    return result


@contextmanager
def begin(
    settings: MigrateSettings, metadata: MetaData | None, seed: Seed | None = None
) -> Iterator[Start | None]:
    """The start of these settings, closed after the block; None when ``mode`` is ``off``."""
    if settings.mode == "off":
        yield None
        return
    metadata = resolve_metadata(metadata, settings.metadata)
    if settings.empty_database == "create_all":
        require_tables(metadata)
    if seed is None and settings.seed and settings.mode == "upgrade":
        seed = import_seed(settings.seed)  # a bad path fails before anything is touched
    with Start(settings, metadata, seed) as start:
        yield start


def skipped() -> MigrationResult:
    """The result of ``MIGRATE_MODE=off``."""
    return MigrationResult("skipped", None, None, [], 0.0)


def checks_a_local_file(settings: MigrateSettings) -> bool:
    """Whether the no-op check reads a SQLite file through a sync driver: it cannot wait on a
    network, so an event loop may run it in its own thread (``Start.local_noop``)."""
    if settings.mode == "off":
        return False
    url, variable = _url_of(settings)
    try:
        return _is_a_sqlite_file(parse_url(url, variable))
    except MigrationError:
        return False  # the worker thread's start gives the error


def _is_a_sqlite_file(url: URL) -> bool:
    """A SQLite file through a sync driver: nothing on the way to it can wait on a network."""
    if url.get_backend_name() != "sqlite" or is_async_url(url):
        return False
    return backend_for("sqlite").database_file(url) is not None


def migration_database(settings: MigrateSettings) -> Database:
    """The database a start works on: ``DATABASE_URL`` in the modes that never run DDL."""
    url, variable = _url_of(settings)
    return Database(
        busy_within(url, settings.lock_timeout),
        variable=variable,
        connect_timeout=settings.connect_timeout,
    )


def busy_within(url: str, seconds: float) -> str | URL:
    """A SQLite URL whose connections wait ``seconds`` (``MIGRATE_LOCK_TIMEOUT``) for another
    process's write transaction, not the driver's 5: the busy timeout, unless the URL sets
    one. Other URLs as they are."""
    try:
        parsed = make_url(url)
    except Exception:
        return url  # Database says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or "timeout" in parsed.query or parsed.host:
        return url  # sqlite://app.db (a host): Database names the URL as the user wrote it
    return parsed.update_query_dict({"timeout": f"{seconds:g}"})


def _url_of(settings: MigrateSettings) -> tuple[str, str]:
    """The URL a start works on, and the variable that set it."""
    read_only = settings.mode in ("wait", "check")
    url = settings.database_url if read_only else settings.ddl_url
    assert url is not None  # MigrateSettings refuses a missing URL unless mode is off
    variable = (
        "DATABASE_URL" if read_only or not settings.migrate_database_url else "MIGRATE_DATABASE_URL"
    )
    return url, variable


@dataclass
class Tree:
    """One tree of this start: its name (None without ``MIGRATE_TREES``), its settings, its
    Alembic config and, once loaded, its scripts."""

    name: str | None
    settings: MigrateSettings
    cfg: Config
    script: ScriptDirectory | None = None
    heads_read_from: str | None = None  # "cache" or "text", for the debug log
    lookup: HeadsLookup | None = None  # once per start: no revision file is read twice

    @property
    def table(self) -> VersionTable:
        return VersionTable(self.settings.version_table, self.settings.version_table_schema)

    @contextmanager
    def named(self) -> Iterator[None]:
        """Errors raised in the block name the tree they come from (when there are several)."""
        if self.name is None:
            yield
            return
        try:
            yield
        except MigrationFailed as error:
            raise MigrationFailed(
                f"migration tree {self.name!r}: {error}",
                revision=error.revision,
                current_revision=error.current_revision,
            ) from error.__cause__
        except MigrationError as error:
            raise type(error)(f"migration tree {self.name!r}: {error}") from error.__cause__

    def scripts(self) -> ScriptDirectory:
        """The scripts, loaded by Alembic once; their heads are then cached for the next start."""
        if self.script is None:
            with self.named():
                self.script = load_scripts(self.cfg)
            if self.lookup is not None:
                self.lookup.remember(self.script)
        return self.script

    def target_from_text(self, *, cache_only: bool = False) -> tuple[str, ...] | None:
        """The target's revisions, read without executing a revision file; None if unsure.
        ``cache_only``: from the heads cache alone, and a miss is not kept (the files' text
        is then read by the next call)."""
        lookup = self.lookup
        if lookup is None:
            lookup = lookup_heads(self.cfg, cache_only=cache_only)
        if lookup.heads is not None or not cache_only:
            self.lookup = lookup
        heads = lookup.heads
        self.heads_read_from = heads.source if heads is not None else None
        return heads.target(self.settings.target) if heads is not None else None

    def target(self) -> tuple[str, ...]:
        """The target's revisions, from the text when it can be trusted, else from Alembic."""
        found = self.target_from_text()
        if found is not None:
            return found
        with self.named():
            return resolve_target(self.scripts(), self.settings.target)


class Start:
    """One start: the trees, the database, and the connection kept for repeated reads."""

    def __init__(
        self, settings: MigrateSettings, metadata: MetaData | None, seed: Seed | None = None
    ) -> None:
        self.settings = settings
        self.metadata = metadata
        # Only a start that may write seeds: wait and check never write.
        self.seed = seed if settings.mode == "upgrade" else None
        self.started = time.monotonic()
        self.trees = [
            Tree(name, narrowed, alembic_config(narrowed, metadata=metadata))
            for name, narrowed in settings.each_tree()
        ]
        self.db = migration_database(settings)
        self._reader: DedicatedConnection | None = None
        self._fast: tuple[MigrationResult | None, bool, list[tuple[str, ...]] | None] | None = None
        # The fast check's failed connection: when it began, and its error (``run`` counts it
        # as the first attempt).
        self._unreached: tuple[float, BaseException] | None = None

    def __enter__(self) -> Start:
        return self

    def __exit__(self, *_: object) -> None:
        self._drop_reader()
        self.db.dispose()

    # -- the path -------------------------------------------------------------------------

    def local_noop(self) -> MigrationResult | None:
        """The fast no-op check of a SQLite file, short enough for an event loop: the heads from
        the cache alone (no revision file read), the version read without waiting for a lock
        (another process may hold the file for seconds). None when it is not known to be a
        no-op; what it learnt is kept for ``run``."""
        if not _is_a_sqlite_file(self.db.url) or self.seed is not None:
            return None
        fast = self.fast_noop(quick=True)
        if fast[2] is not None:  # every tree's target is known: ``run`` needs no new look
            self._fast = fast
        return fast[0]

    def run(self) -> MigrationResult:
        """The start; only ``MigrationError`` escapes (SPEC 4): a read the database refused (a
        SQLite file another process keeps locked, a role that may not read the version table)
        is one too."""
        try:
            return self._run()
        except MigrationError:
            raise
        except SQLAlchemyError as error:
            raise self.refused(error) from None

    def refused(self, error: SQLAlchemyError) -> MigrationError:
        """What a read the database refused means, and what to do."""
        if self.db.dialect_name == "sqlite" and is_locked(error):
            return LockTimeout(
                f"another process kept {self.db.url.database} locked (a write transaction) "
                f"for longer than MIGRATE_LOCK_TIMEOUT={self.settings.lock_timeout:g}s; "
                "nothing was migrated: start again, or raise MIGRATE_LOCK_TIMEOUT"
            )
        tables = ", ".join(
            ".".join(p for p in (tree.table.schema, tree.table.name) if p) for tree in self.trees
        )
        return MigrationFailed(
            f"the database refused a read of {tables} ({error_line(error, [self.db.url])}); "
            "nothing was migrated: grant the role of the URL SELECT on it (and INSERT, UPDATE, "
            "DELETE, CREATE to migrate), or check the URL",
            revision=None,
            current_revision=None,
        )

    def _run(self) -> MigrationResult:
        fast, reachable, wanted = self._fast if self._fast is not None else self.fast_noop()
        if fast is not None and self.seed is None:
            return fast  # the lock-free no-op: a seed needs the lock even at the target
        if wanted is None:
            # The scripts before the database: a missing folder or a broken revision must not
            # leave an empty SQLite file behind (connecting creates it).
            wanted = [tree.target() for tree in self.trees]
        if not reachable:
            since, failed = self._unreached or (None, None)
            self.db.wait_until_reachable(self.settings.connect_timeout, since=since, failed=failed)
        if self.settings.mode == "upgrade":
            return self.upgrade(wanted)
        plans = self.plans(self.db.run)
        if all(plan.action == "noop" for plan in plans):
            return self.finish(self.results(plans, "noop"))
        if self.settings.mode == "check":
            raise PendingMigrations(f"{self.behind(plans)}; MIGRATE_MODE=check never migrates")
        return self.wait(plans)

    def fast_noop(
        self, *, quick: bool = False
    ) -> tuple[MigrationResult | None, bool, list[tuple[str, ...]] | None]:
        """The ``noop`` when every tree is at its target (else None, "don't know"); whether
        the database answered; every tree's target when known without loading the scripts.
        ``quick``: see ``local_noop``."""
        reachable = False
        wanted: list[tuple[str, ...]] | None = None
        began = time.monotonic()
        try:
            targets = [tree.target_from_text(cache_only=quick) for tree in self.trees]
            if any(target is None for target in targets):
                return None, False, None
            # An empty history's target is no revision (``()``): known, and reached by a
            # version table with no row.
            wanted = [target for target in targets if target is not None]
            if self.db.is_async:
                # One SELECT per tree needs no transaction: autocommit spares BEGIN and COMMIT.
                with self.db.connection(autocommit=True) as connection:
                    reachable = True
                    found = self.noop_if_at(connection.run, wanted)
            else:
                dialect = self.db.engine.dialect

                def read(cursor: DBAPICursor) -> list[tuple[str, ...]]:
                    nonlocal reachable
                    reachable = True
                    return [tree.table.read_with(cursor, dialect) for tree in self.trees]

                found = self.noop_if(self.db.read_bare(read, wait=not quick), wanted)
        except (SQLAlchemyError, OSError) as error:
            log.debug("no-op check: %s, loading the scripts", type(error).__name__)
            if not reachable:
                self._unreached = (began, error)
            return None, reachable, wanted
        except Exception as error:  # the fast path only ever says "noop" or "don't know"
            if not reachable and isinstance(error, self.db.engine.dialect.loaded_dbapi.Error):
                self._unreached = (began, error)  # the bare driver's own error: not wrapped
            log.debug(
                "no-op check failed (%s), loading the scripts", error_line(error, [self.db.url])
            )
            return None, reachable, wanted
        if found is not None:
            log.debug(
                "no-op start: database at %s, the target; heads from the %s of the revision "
                "files, none executed",
                found.to_revision,
                "+".join(sorted({str(tree.heads_read_from) for tree in self.trees})),
            )
        return found, reachable, wanted

    def upgrade(self, wanted: list[tuple[str, ...]] | None) -> MigrationResult:
        """Under the lock: read again, plan every tree, apply the plans."""
        targets = wanted if wanted is not None else [tree.target() for tree in self.trees]
        reached: list[MigrationResult] = []

        def migrated_meanwhile() -> bool:
            try:
                found = self.noop_if_at(self.read, targets)
            except MigrationError:
                raise
            except Exception:  # no version table yet, no connection: not known to be there
                return False
            reached[:] = [found] if found is not None else []
            return found is not None

        s = self.settings
        try:
            with migration_lock(
                self.db,
                version_table=s.version_table,
                version_table_schema=s.version_table_schema,
                timeout=s.lock_timeout,
                enabled=s.lock,
                # A seed runs under the lock: wait for it even once another process migrated.
                ends_when=migrated_meanwhile if self.seed is None else None,
            ) as keeper:
                result = self.upgrade_locked(targets, keeper)
                if self.seed is not None:
                    self.run_seed(self.seed, result, keeper)
                return result
        except WaitEnded:
            return reached[0]

    def upgrade_locked(
        self, targets: list[tuple[str, ...]], keeper: LockKeeper | None
    ) -> MigrationResult:
        """Under the lock: at the target already (another process migrated), else plan and
        apply. One read, on the reader's connection, serves both: whoever held the lock has
        usually just migrated (then no script is loaded), else it is the state the plans start
        from (a fresh database pays no second connection for it)."""
        try:
            states = self.read(self.read_states)
        finally:
            self._drop_reader()  # idle from here on: not kept open across the migration
        if all(state.has_version_table for state in states):
            found = self.noop_if([state.revisions for state in states], targets)
            if found is not None:
                return found
        plans = self.plans(self.db.run, states)
        if all(plan.action == "noop" for plan in plans):
            return self.finish(self.results(plans, "noop"))
        return self.execute(plans, keeper)

    def run_seed(self, seed: Seed, result: MigrationResult, keeper: LockKeeper | None) -> None:
        """The seed, in one transaction committed when it returns, still under the lock."""
        self._drop_reader()
        name = seed_name(seed)
        try:
            with guarded_commits(keeper, transactional_ddl=True):
                seconds = self.db.run(lambda connection: run_seed(seed, connection))
        except MigrationError:
            raise
        except Exception as error:
            raise MigrationFailed(
                f"seed {name} failed: {error_line(error, [self.db.url])}; its transaction was "
                f"rolled back, the migration before it stays (the database is at "
                f"{result.to_revision or 'no revision'}); fix the seed and start again",
                revision=None,
                current_revision=result.to_revision,
            ) from None
        log.info("seeded with %s in %.3fs, under the migration lock", name, seconds)

    def wait(self, first: list[MigrationPlan]) -> MigrationResult:
        """``MIGRATE_MODE=wait``: poll, never writing, until another process has brought every
        tree to its target; failed reads (a busy SQLite file, a restarting server) are retried."""
        timeout = self.settings.lock_timeout
        log.info("MIGRATE_MODE=wait: %s; waiting up to %gs", self.behind(first), timeout)
        latest = [first]
        problem = [""]

        def attempt() -> list[MigrationPlan] | None:
            try:
                plans = self.plans(self.read)
            except UnversionedDatabase:
                return None  # a release job with a baseline may adopt it yet
            except MigrationError:
                raise
            except Exception as error:  # a driver's error, raw or wrapped: read again
                problem[0] = f"; last read failed: {error_line(error, [self.db.url])}"
                log.debug("MIGRATE_MODE=wait: reading the database failed, retrying%s", problem[0])
                return None
            latest[0], problem[0] = plans, ""
            return plans if all(plan.action == "noop" for plan in plans) else None

        def timed_out() -> LockTimeout:
            return LockTimeout(
                f"MIGRATE_MODE=wait: {self.behind(latest[0])}, after {timeout:g}s "
                "(MIGRATE_LOCK_TIMEOUT); run the migration (fastapi-migrate upgrade) or start "
                f"one app with MIGRATE_MODE=upgrade{problem[0]}"
            )

        poll(attempt, timeout, timed_out)
        return self.finish(
            {
                tree.name: _tree_result(plan, "noop" if plan.action == "noop" else "waited")
                for tree, plan in zip(self.trees, first, strict=True)
            }
        )

    # -- reading ------------------------------------------------------------------------

    def read(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` on the connection kept for repeated reads (opened at the first one, after the
        lock's; dropped when a read fails, so the next opens a new one)."""
        if self._reader is None:
            self._reader = DedicatedConnection(self.db, autocommit=True)
        try:
            return self._reader.run(fn)
        except Exception:
            self._drop_reader()
            raise

    def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with suppress(Exception):  # it may be the connection that just failed
                reader.close()

    def noop_if_at(self, run: Runs, wanted: list[tuple[str, ...]]) -> MigrationResult | None:
        """The ``noop`` if every version table holds exactly its tree's target revisions; one
        query per tree. Raises when a version table is missing ("don't know")."""
        return self.noop_if(run(lambda c: [tree.table.read(c) for tree in self.trees]), wanted)

    def noop_if(
        self, current: list[tuple[str, ...]], wanted: list[tuple[str, ...]]
    ) -> MigrationResult | None:
        """The ``noop`` if every tree's ``current`` revisions are exactly its target."""
        if not all(at_target(now, want) for now, want in zip(current, wanted, strict=True)):
            return None
        return self.finish(
            {
                tree.name: MigrationResult("noop", format_revisions(now), format_revisions(now))
                for tree, now in zip(self.trees, current, strict=True)
            }
        )

    def read_states(self, connection: Connection) -> list[DatabaseState]:
        """Every tree's state of the database, in one go."""
        tables = [tree.table for tree in self.trees]
        adoptable = [tree.settings.baseline is not None for tree in self.trees]
        return read_states(connection, tables, adoptable=adoptable)

    def plans(self, run: Runs, states: list[DatabaseState] | None = None) -> list[MigrationPlan]:
        """Every tree's plan, or the first tree's error, before anything runs; ``states``:
        already read (under the lock), else read with ``run``."""
        if states is None:
            states = run(self.read_states)
        plans = []
        for tree, state in zip(self.trees, states, strict=True):
            with tree.named():
                plans.append(
                    plan_migration(
                        state,
                        tree.scripts(),
                        target=tree.settings.target,
                        empty_database=self.settings.empty_database,
                        baseline=tree.settings.baseline,
                        unknown_revision=self.settings.unknown_revision,
                        baseline_setting="MIGRATE_BASELINE"
                        if tree.name is None
                        else 'the tree\'s "baseline" in MIGRATE_TREES',
                    )
                )
        return plans

    def behind(self, plans: list[MigrationPlan]) -> str:
        """Which trees are not at their target, for the check and wait messages."""
        return "; ".join(
            ("" if tree.name is None else f"migration tree {tree.name!r}: ")
            + f"the database is at {plan.from_revision or 'no revision'}, not at "
            f"{tree.settings.target} ({plan.to_revision}): {len(plan.pending)} migration(s) "
            f"pending ({', '.join(plan.pending)})"
            for tree, plan in zip(self.trees, plans, strict=True)
            if plan.action != "noop"
        )

    # -- executing ----------------------------------------------------------------------

    def execute(self, plans: list[MigrationPlan], keeper: LockKeeper | None) -> MigrationResult:
        """Apply each tree's plan in order, under the lock ``keeper`` keeps."""
        self.check_safety(plans)
        self.back_up(plans)
        results: dict[str | None, MigrationResult] = {}
        for tree, plan in zip(self.trees, plans, strict=True):
            if plan.action == "noop":
                results[tree.name] = _tree_result(plan, "noop")
                continue
            began = time.monotonic()
            try:
                with tree.named():
                    applied = self.apply(tree, plan, keeper)
            except MigrationFailed as error:
                done = [f"{name} ({r.action})" for name, r in results.items() if r.action != "noop"]
                if not done:
                    raise
                raise MigrationFailed(
                    f"{error}; migrated before it: {', '.join(done)}",
                    revision=error.revision,
                    current_revision=error.current_revision,
                ) from error.__cause__
            results[tree.name] = _tree_result(plan, plan.action, applied, began)
            if tree.name is not None:
                log.debug("migration tree %s: %s", tree.name, results[tree.name].summary())
        return self.finish(results)

    def check_safety(self, plans: list[MigrationPlan]) -> None:
        """``MIGRATE_UNSAFE``: lint the revisions about to run, before any DDL; log each finding
        (``warn``) or refuse the start (``refuse``). Only reached when there is work to do."""
        s = self.settings
        if s.unsafe == "allow":
            return
        lines: list[str] = []
        for tree, plan in zip(self.trees, plans, strict=True):
            if plan.action == "noop" or plan.create_all or not plan.pending:
                continue
            try:
                report: Report = self.db.run(
                    partial(_lint_on, tree.scripts(), plan.pending, max_rows=s.unsafe_max_rows)
                )
            except Exception as error:  # the check must not be what breaks a warn start
                problem = f"the revisions could not be checked: {error_line(error, [self.db.url])}"
                if s.unsafe == "refuse":
                    raise UnsafeMigration(f"MIGRATE_UNSAFE=refuse: {problem}") from None
                log.warning("MIGRATE_UNSAFE=warn: %s", problem)
                continue
            prefix = "" if tree.name is None else f"migration tree {tree.name}: "
            for note in report.notes:
                log.warning("unsafe migration check: %s%s", prefix, note)
            for finding in report.blocking:
                lines.append(prefix + finding.line_text())
                log.warning("unsafe migration: %s%s", prefix, finding.line_text())
        if lines and s.unsafe == "refuse":
            raise UnsafeMigration(
                f"MIGRATE_UNSAFE=refuse: {len(lines)} unsafe finding(s) in the revisions to "
                f"apply, nothing was migrated: {' | '.join(lines)}. Write them the safe way, "
                "allow each in its revision file (# fastapi-migrate: allow RULE -- REASON), "
                "or set MIGRATE_UNSAFE=warn"
            )

    def back_up(self, plans: list[MigrationPlan]) -> None:
        """One backup (``MIGRATE_BACKUP_DIR``, where the database is a file) before any DDL."""
        if self.settings.backup_dir is None:
            return
        first = next(plan for plan in plans if plan.action != "noop")
        label = (first.from_revision or "empty").replace(",", "+")
        backup = self.db.backend.backup(self.db.url, self.settings.backup_dir, label)
        if backup is not None:
            log.info("backed up %s to %s before migrating", self.db.url.database, backup)

    def apply(self, tree: Tree, plan: MigrationPlan, keeper: LockKeeper | None) -> list[str]:
        """Apply one tree's plan, committing nothing without the lock; a revision that timed
        out waiting for a table lock is rolled back and tried again (``ddl_retry``); any other
        failure, or the last timeout, becomes ``MigrationFailed`` (``LockLost`` if the lock
        went)."""
        s = tree.settings
        script = tree.scripts()
        applied: list[str] = []
        prefix = "" if tree.name is None else f"migration tree {tree.name}: "
        revisions = RevisionProgress(script, plan.pending, prefix)
        monitor = MigrationMonitor(self.db, s.ddl_lock_timeout, revisions)

        def applied_one(revision: str, seconds: float) -> None:
            applied.append(revision)
            revisions.ended(revision, seconds)
            log.debug("applied revision %s in %.3fs", revision, seconds)

        def create_all(connection: Connection) -> None:
            # Tables from the models and the version stamp, in one transaction where DDL allows.
            require_tables(self.metadata).create_all(connection)
            stamp(connection, script, s, s.target)

        attempt = 1
        with (
            monitor.watching(),
            retried_statements(self.db.backend, s.ddl_lock_timeout, s.ddl_lock_retries, monitor),
        ):
            while True:
                try:
                    with (
                        migration_sessions(s.ddl_lock_timeout),
                        guarded_commits(keeper, self.db.backend.transactional_ddl),
                        self.db.connection() as connection,
                    ):
                        if plan.baseline is not None and attempt == 1:
                            self.stamp_baseline(connection, script, s, plan.baseline)
                        if plan.create_all:
                            connection.run(create_all)
                            applied.extend(plan.pending)
                        else:
                            run_on_connection(
                                s,
                                connection,
                                lambda cfg: run_upgrade(
                                    cfg, script, s, s.target, applied_one, revisions.started
                                ),
                                self.metadata,
                            )
                    self.verify(tree, plan)
                    return applied
                except LockLost as lost:
                    raise self.lock_lost(tree, plan, applied, lost) from None
                except MigrationError:
                    raise
                except Exception as error:
                    running = monitor.current()
                    revisions.stopped()
                    blockers = monitor.blockers()
                    timed_out = s.ddl_lock_timeout > 0 and is_lock_timeout(error)
                    if timed_out and self.db.backend.transactional_ddl:
                        applied[:] = self.committed(tree, script, applied)
                        if attempt <= s.ddl_lock_retries:
                            give_way(running, s, attempt, blockers)
                            attempt += 1
                            continue
                    if self.db.dialect_name == "sqlite" and is_locked(error):
                        raise self.locked_out(tree, applied) from None
                    failure = migration_failed(
                        self.db,
                        s,
                        script,
                        plan,
                        applied,
                        error,
                        blockers=describe(blockers) if timed_out else None,
                    )
                    raise failure from redacted_cause(self.db, error)

    @staticmethod
    def stamp_baseline(
        connection: DedicatedConnection, script: ScriptDirectory, s: MigrateSettings, rev: str
    ) -> None:
        connection.run(lambda c: stamp(c, script, s, rev))
        log.info("stamped unversioned database at baseline %s", rev)

    def committed(self, tree: Tree, script: ScriptDirectory, applied: list[str]) -> list[str]:
        """Which of ``applied`` the database holds after a rollback (those its revisions
        descend from: all of them with one transaction per revision, none with one for all)."""
        try:
            now = self.db.run(tree.table.read_if_present)
            kept = {r.revision for r in script.revision_map.iterate_revisions(now, "base")}
        except Exception:  # unknown: the failure's message reads the database again
            return []
        return [revision for revision in applied if revision in kept]

    def locked_out(self, tree: Tree, applied: list[str]) -> LockTimeout:
        """Another process kept the SQLite file's write lock past ``MIGRATE_LOCK_TIMEOUT``."""
        try:
            left = format_revisions(self.db.run(tree.table.read_if_present)) or "no revision"
        except Exception:
            left = "a revision that could not be read"
        return LockTimeout(
            f"another process kept {self.db.url.database} locked (a write transaction) for "
            f"longer than MIGRATE_LOCK_TIMEOUT={self.settings.lock_timeout:g}s; what was not "
            f"committed was rolled back, the database is left at {left} (applied this start: "
            f"{', '.join(applied) or 'none'}): start again, or raise MIGRATE_LOCK_TIMEOUT"
        )

    def lock_lost(
        self, tree: Tree, plan: MigrationPlan, applied: list[str], lost: LockLost
    ) -> LockLost:
        """What happened, where the database was left, and what to change."""
        try:
            left = format_revisions(self.db.run(tree.table.read_if_present)) or "no revision"
        except Exception:
            left = "a revision that could not be read"
        if self.db.backend.transactional_ddl:
            kept = "what was not committed was rolled back"
        else:
            kept = "it stopped before the next revision"
        return LockLost(
            f"the migration lock was lost while migrating ({lost}): nothing more was "
            f"committed, {kept}; the database is left at {left} (applied this start: "
            f"{', '.join(applied) or 'none'}). Another process may take the lock and migrate "
            "now. The lock lives on its own connection: keep servers, poolers and networks "
            "from closing it (PostgreSQL idle_session_timeout, MySQL/MariaDB wait_timeout, "
            "PgBouncer server_idle_timeout, load balancer or NAT idle timeouts; a pooler in "
            "session mode, never transaction mode), then start again"
        )

    def verify(self, tree: Tree, plan: MigrationPlan) -> None:
        """``env.py`` may ignore the URL it is given: check that the database really moved."""
        now = self.db.run(tree.table.read_if_present)
        if not at_target(now, plan.target_revisions):
            raise MigrationFailed(
                f"env.py finished, but the database is at {format_revisions(now) or 'no revision'}"
                f", not {plan.to_revision}: does env.py use the URL and connection "
                "fastapi-migrate gives it (config.attributes['connection'], sqlalchemy.url)?",
                revision=None,
                current_revision=format_revisions(now),
            )

    # -- results ------------------------------------------------------------------------

    def results(
        self, plans: list[MigrationPlan], action: ResultAction
    ) -> dict[str | None, MigrationResult]:
        return {
            tree.name: _tree_result(plan, action)
            for tree, plan in zip(self.trees, plans, strict=True)
        }

    def finish(self, results: dict[str | None, MigrationResult]) -> MigrationResult:
        """The start's result: the one tree's own, or one for all trees: the first action other
        than ``noop``, every tree's revisions joined by commas (as Alembic shows several heads),
        every applied revision in order."""
        seconds = round(time.monotonic() - self.started, 4)
        if None in results:
            return replace(results[None], seconds=seconds)
        values = list(results.values())
        action: ResultAction = next((r.action for r in values if r.action != "noop"), "noop")
        return MigrationResult(
            action,
            ",".join(r.from_revision for r in values if r.from_revision) or None,
            ",".join(r.to_revision for r in values if r.to_revision) or None,
            [revision for r in values for revision in r.applied],
            seconds,
            trees={str(name): r for name, r in results.items()},
        )


def _lint_on(
    script: ScriptDirectory,
    pending: tuple[str, ...],
    connection: Connection,
    *,
    max_rows: int | None,
) -> Report:
    return lint_pending(script, pending, connection, max_rows=max_rows)


def _tree_result(
    plan: MigrationPlan, action: ResultAction, applied: list[str] | None = None, began: float = 0.0
) -> MigrationResult:
    to_revision = plan.from_revision if action == "noop" else plan.to_revision
    seconds = round(time.monotonic() - began, 4) if began else 0.0
    return MigrationResult(action, plan.from_revision, to_revision, applied or [], seconds)
