"""``migrate_trees``: several migration trees (one per package), in order, under one lock.

Every tree is decided before any of them runs, so a tree that needs a human (unversioned,
unknown revision, several heads) stops the start before anything is touched. Whether the
database is empty is decided once, for all trees:

- a tree whose version table exists is decided as a lone tree would be;
- no tables besides the trees' version tables: every tree is replayed from base;
- a tree's version table is missing but the database has tables: with the tree's ``baseline``
  it is stamped there and upgraded (``adopted``); else, when another tree's version table
  exists, it is a package new to this database and is replayed from base; else the database is
  unversioned (``UnversionedDatabase``).

The lock is the one a single tree takes, keyed on ``MIGRATE_VERSION_TABLE``, so every process of
the app excludes every other whether or not it knows about the trees.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, exc, inspect

from .alembic_run import alembic_config, load_scripts
from .database import Database
from .errors import (
    LockTimeout,
    MigrationError,
    MigrationFailed,
    PendingMigrations,
    UnversionedDatabase,
)
from .fast_path import script_heads
from .lock import migration_lock
from .migration_tree import MigrationTree
from .plan import MigrationPlan, plan_migration
from .result import MigrationResult, ResultAction
from .runner import _Migrator, migration_database
from .settings import MigrateSettings
from .state import DatabaseState, read_revisions

log = logging.getLogger("fastapi_migrate")


def tree_settings(settings: MigrateSettings, tree: MigrationTree) -> MigrateSettings:
    """The app's settings narrowed to one tree: its folder, version table, target, baseline."""
    return settings.model_copy(
        update={
            "script_location": tree.script_location,
            "version_table": tree.version_table,
            "target": tree.target or settings.target,
            "baseline": tree.baseline,
            "trees": [],
        }
    )


@dataclass
class _Tree:
    """One tree of this start: its settings, Alembic config and (once loaded) scripts."""

    tree: MigrationTree
    settings: MigrateSettings
    cfg: Config
    script: ScriptDirectory | None = None

    @property
    def name(self) -> str:
        return self.tree.name

    def scripts(self) -> ScriptDirectory:
        if self.script is None:
            with in_tree(self.tree):
                self.script = load_scripts(self.cfg)
        return self.script


def migrate_trees(
    settings: MigrateSettings, metadata: MetaData | None, started: float
) -> MigrationResult:
    """``migrate`` for ``settings.trees``: the startup logic of the settings' mode, per tree."""
    trees = []
    for tree in settings.trees:
        narrowed = tree_settings(settings, tree)
        trees.append(_Tree(tree, narrowed, alembic_config(narrowed, metadata=metadata)))
    db = migration_database(settings)
    try:
        fast = _noop_start(trees, db, started)
        if fast is not None:
            return fast
        db.wait_until_reachable(settings.connect_timeout)
        if settings.mode == "upgrade":
            with migration_lock(
                db,
                version_table=settings.version_table,
                version_table_schema=settings.version_table_schema,
                timeout=settings.lock_timeout,
                enabled=settings.lock,
            ):
                # Whoever held the lock has usually just migrated: one query per tree says so.
                fast = _noop_start(trees, db, started)
                if fast is not None:
                    return fast
                plans = _decide(db, trees, settings)
                results = _execute(db, trees, plans, settings, metadata)
            return combine(results, started)
        plans = _decide(db, trees, settings)
        if all(plan.action == "noop" for plan in plans):
            return _noops(trees, plans, started)
        if settings.mode == "check":
            raise PendingMigrations(f"{_behind(trees, plans)}; MIGRATE_MODE=check never migrates")
        return _wait(db, trees, plans, settings, started)
    finally:
        db.dispose()


@contextmanager
def in_tree(tree: MigrationTree) -> Iterator[None]:
    """Errors raised in the block name the tree they come from."""
    try:
        yield
    except MigrationFailed as error:
        raise MigrationFailed(
            f"migration tree {tree.name!r}: {error}",
            revision=error.revision,
            current_revision=error.current_revision,
        ) from error.__cause__
    except MigrationError as error:
        raise type(error)(f"migration tree {tree.name!r}: {error}") from error.__cause__


def tree_states(
    connection: Connection, trees: list[MigrationTree], schema: str | None
) -> list[DatabaseState]:
    """Each tree's state, with emptiness judged once for the whole database (module doc)."""
    inspector = inspect(connection)
    names = {s: set(inspector.get_table_names(schema=s)) for s in {None, schema}}
    version_tables = {tree.version_table for tree in trees}
    has_tables = any(name not in version_tables for found in names.values() for name in found)
    present = [tree.version_table in names[schema] for tree in trees]
    states = []
    for tree, has_version_table in zip(trees, present, strict=True):
        if has_version_table:
            revisions = read_revisions(
                connection, version_table=tree.version_table, version_table_schema=schema
            )
            states.append(DatabaseState(True, revisions, has_tables))
        elif has_tables and (tree.baseline is not None or not any(present)):
            states.append(DatabaseState(False, (), True))  # unversioned: baseline, or refuse
        else:
            states.append(DatabaseState(False, (), False))  # empty, or a new package: replay
    return states


def _decide(db: Database, trees: list[_Tree], settings: MigrateSettings) -> list[MigrationPlan]:
    """Every tree's plan, or the first tree's error, before anything runs."""
    schema = settings.version_table_schema
    states = db.run(lambda c: tree_states(c, [t.tree for t in trees], schema))
    plans = []
    for tree, state in zip(trees, states, strict=True):
        with in_tree(tree.tree):
            if state.is_unversioned and tree.tree.baseline is None:
                tables = ", ".join(t.tree.version_table for t in trees)
                raise UnversionedDatabase(
                    f"the database has tables but none of the version tables ({tables}), so "
                    "fastapi-migrate does not know which migrations it already has and will "
                    'not touch it; give this tree a "baseline" in MIGRATE_TREES (the revision '
                    "its schema matches: stamped, then upgraded), or stamp it yourself"
                )
            plans.append(
                plan_migration(
                    state,
                    tree.scripts(),
                    target=tree.settings.target,
                    baseline=tree.tree.baseline,
                    unknown_revision=settings.unknown_revision,
                )
            )
    return plans


def _noop_start(trees: list[_Tree], db: Database, started: float) -> MigrationResult | None:
    """``noop`` when every tree is at its target: heads read without executing a revision file
    (``fast_path``), then one connection reads every version table; None means "don't know"."""
    wanted = []
    for tree in trees:
        heads = script_heads(tree.cfg)
        target = heads.target(tree.settings.target) if heads is not None else None
        if not target:
            return None
        wanted.append(target)
    schema = trees[0].settings.version_table_schema
    try:
        current = db.run(lambda c: [_versions(c, t.tree.version_table, schema) for t in trees])
    except (exc.SQLAlchemyError, OSError):
        return None  # a version table is missing, or the database did not answer
    results = {}
    for tree, target, revisions in zip(trees, wanted, current, strict=True):
        if len(set(revisions)) != len(revisions) or set(revisions) != set(target):
            return None
        revision = ",".join(revisions)
        results[tree.name] = MigrationResult("noop", revision, revision, [], 0.0)
    return combine(results, started)


def _versions(connection: Connection, table: str, schema: str | None) -> tuple[str, ...]:
    """``SELECT version_num``; raises when the table is missing."""
    preparer = connection.dialect.identifier_preparer
    name = preparer.quote(table)
    if schema is not None:
        name = f"{preparer.quote_schema(schema)}.{name}"
    return tuple(row[0] for row in connection.exec_driver_sql(f"SELECT version_num FROM {name}"))


def _noops(trees: list[_Tree], plans: list[MigrationPlan], started: float) -> MigrationResult:
    return combine(
        {t.name: _result(p, "noop", [], 0.0) for t, p in zip(trees, plans, strict=True)},
        started,
    )


def _behind(trees: list[_Tree], plans: list[MigrationPlan]) -> str:
    """Which trees are not at their target, for check and wait mode messages."""
    return "; ".join(
        f"migration tree {t.name!r} is at {p.from_revision or 'no revision'}, not at "
        f"{p.to_revision} ({len(p.pending)} pending: {', '.join(p.pending)})"
        for t, p in zip(trees, plans, strict=True)
        if p.action != "noop"
    )


def _wait(
    db: Database,
    trees: list[_Tree],
    first: list[MigrationPlan],
    settings: MigrateSettings,
    started: float,
) -> MigrationResult:
    """Poll, never writing, until another process has brought every tree to its target."""
    deadline = time.monotonic() + settings.lock_timeout
    delay = 0.1
    plans = first
    log.info(
        "MIGRATE_MODE=wait: %s; waiting up to %gs", _behind(trees, plans), settings.lock_timeout
    )
    while any(plan.action != "noop" for plan in plans):
        if time.monotonic() + delay > deadline:
            raise LockTimeout(
                f"MIGRATE_MODE=wait: after {settings.lock_timeout:g}s (MIGRATE_LOCK_TIMEOUT) "
                f"{_behind(trees, plans)}; run the migration (fastapi-migrate upgrade) or "
                "start one app with MIGRATE_MODE=upgrade"
            )
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 1.5, 2.0)
        try:
            plans = _decide(db, trees, settings)
        except UnversionedDatabase:
            continue  # a release job with a baseline may adopt it yet
    return combine(
        {
            t.name: _result(p, "noop" if p.action == "noop" else "waited", [], 0.0)
            for t, p in zip(trees, first, strict=True)
        },
        started,
    )


def _execute(
    db: Database,
    trees: list[_Tree],
    plans: list[MigrationPlan],
    settings: MigrateSettings,
    metadata: MetaData | None,
) -> dict[str, MigrationResult]:
    """Apply each tree's plan in order, under the lock the caller holds."""
    results: dict[str, MigrationResult] = {}
    backup_dir = settings.backup_dir
    for tree, plan in zip(trees, plans, strict=True):
        if plan.action == "noop":
            results[tree.name] = _result(plan, "noop", [], 0.0)
            continue
        # One backup of a SQLite file, before the first DDL of the start.
        narrowed = tree.settings.model_copy(update={"backup_dir": backup_dir})
        backup_dir = None
        began = time.monotonic()
        migrator = _Migrator(narrowed, tree.scripts(), metadata, began, db)
        try:
            with in_tree(tree.tree):
                applied = migrator._execute(db, plan)
        except MigrationFailed as error:
            done = [f"{name} ({r.action})" for name, r in results.items() if r.action != "noop"]
            if not done:
                raise
            raise MigrationFailed(
                f"{error}; migrated before it: {', '.join(done)}",
                revision=error.revision,
                current_revision=error.current_revision,
            ) from error.__cause__
        results[tree.name] = _result(plan, plan.action, applied, time.monotonic() - began)
        log.debug("migration tree %s: %s", tree.name, results[tree.name].summary())
    return results


def _result(
    plan: MigrationPlan, action: ResultAction, applied: list[str], seconds: float
) -> MigrationResult:
    to_revision = plan.from_revision if action == "noop" else plan.to_revision
    return MigrationResult(action, plan.from_revision, to_revision, applied, round(seconds, 4))


def combine(results: dict[str, MigrationResult], started: float) -> MigrationResult:
    """One result for the start: the first action other than ``noop``, every tree's revisions
    joined by commas (as Alembic shows several heads), every applied revision in order."""
    values = list(results.values())
    action: ResultAction = next((r.action for r in values if r.action != "noop"), "noop")
    return MigrationResult(
        action,
        ",".join(r.from_revision for r in values if r.from_revision) or None,
        ",".join(r.to_revision for r in values if r.to_revision) or None,
        [revision for r in values for revision in r.applied],
        round(time.monotonic() - started, 4),
        trees=results,
    )
