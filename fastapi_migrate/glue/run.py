"""Running ``env.py``: upgrades with a callback per revision, stamps, and Alembic commands on
our own connection, with the app's logging kept as it was.

``env.py`` files as projects write them: the connection in ``config.attributes["connection"]``
also answers ``.connect()`` (pytest-alembic's convention treats it as an Engine), and an upgrade
refuses, before anything is written, a version table that ``env.py`` moves away from the one
fastapi-migrate reads on every start.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import alembic.runtime.migration
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData

from ..backends.database import DedicatedConnection
from ..backends.sqlite import emits_begin, migrates_after_writers
from ..foundation.errors import ConfigurationError
from ..foundation.settings import MigrateSettings
from .config import alembic_config, environment_options
from .logging_guard import preserved_logging
from .same_database import refuse_another_database


def run_upgrade(
    cfg: Config,
    script: ScriptDirectory,
    settings: MigrateSettings,
    target: str,
    on_applied: Callable[[str, float], None],
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Run ``env.py`` to upgrade to ``target``, reporting each revision as it starts
    (``on_start``) and once applied, with its time.

    This is ``alembic.command.upgrade`` with the version table passed as a default option,
    and a callback per revision (``env.py`` may not pass ``on_version_apply`` through).
    """
    started = [time.monotonic()]

    def record(*, ctx: MigrationContext, step: MigrationInfo, heads: Any, run_args: Any) -> None:
        now = time.monotonic()
        revision = step.up_revision_id if step.is_upgrade else step.down_revision_ids[0]
        if revision is not None and not step.is_stamp:
            on_applied(revision, now - started[0])
        started[0] = now

    def upgrade(rev: Any, context: MigrationContext) -> Any:
        context.on_version_apply_callbacks = (*context.on_version_apply_callbacks, record)
        started[0] = time.monotonic()
        steps = script._upgrade_revs(target, rev)
        if on_start is None:
            return steps
        return [_Announced(step, on_start) for step in steps]

    with (
        preserved_logging(),
        _environment(
            settings,
            cfg,
            script,
            fn=upgrade,
            as_sql=False,
            destination_rev=target,
            **environment_options(settings),
        ),
    ):
        script.run_env()


class _Announced:
    """A revision step that reports its revision when Alembic is about to run it (the
    ``migration_fn`` is read right before the call, inside the revision's transaction)."""

    def __init__(self, step: Any, on_start: Callable[[str], None]) -> None:
        self._step = step
        self._on_start = on_start

    @property
    def migration_fn(self) -> Any:
        revision = getattr(getattr(self._step, "revision", None), "revision", None)
        if isinstance(revision, str) and self._step.is_upgrade:
            self._on_start(revision)
        return self._step.migration_fn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)

    def __str__(self) -> str:
        return str(self._step)


class _CheckedEnvironment(EnvironmentContext):
    """Refuses, as ``env.py`` configures the context and before anything is written, a version
    table other than the settings': every later start would read the wrong one (and find the
    database unversioned)."""

    settings: MigrateSettings | None = None

    def configure(self, *args: Any, **kwargs: Any) -> None:
        super().configure(*args, **kwargs)
        s, context = self.settings, self.get_context()
        given = (context.version_table, context.version_table_schema)
        if s is None or given == (s.version_table, s.version_table_schema):
            return
        table = ".".join(p for p in (context.version_table_schema, context.version_table) if p)
        ours = ".".join(p for p in (s.version_table_schema, s.version_table) if p)
        fixes = []
        if context.version_table_schema != s.version_table_schema:
            fixes.append(f"MIGRATE_VERSION_TABLE_SCHEMA={context.version_table_schema or ''}")
        if context.version_table != s.version_table:
            fixes.append(f"MIGRATE_VERSION_TABLE={context.version_table}")
        raise ConfigurationError(
            f"env.py configures the version table {table} (context.configure), but "
            f"fastapi-migrate reads {ours} on every start: set {' and '.join(fixes)}, or let "
            "env.py take version_table and version_table_schema from the settings "
            "(config.attributes); nothing was migrated"
        )


def _checked_configure(original: Callable[..., None]) -> Callable[..., None]:
    """``EnvironmentContext.configure`` that, for a Config of ours (built by ``alembic_config``,
    whichever Alembic command runs ``env.py``: upgrade, downgrade, stamp, the checks of
    ``fastapi_migrate.testing``), refuses a connection to another database than the one asked
    for, before Alembic reads or writes anything. Other Configs are left alone."""

    def configure(self: EnvironmentContext, *args: Any, **kwargs: Any) -> None:
        attributes = self.config.attributes
        if not attributes.get("fastapi_migrate"):
            original(self, *args, **kwargs)
            return
        connection = kwargs.get("connection", args[0] if args else None)
        # revision --autogenerate and current only read: no write lock for them.
        reads_only = any(k in self.context_opts for k in ("revision_context", "dont_mutate"))
        settings = None if reads_only else attributes.get("settings")
        _transactional_sqlite(connection, kwargs, settings)
        original(self, *args, **kwargs)
        context = self.get_context()
        if not context.as_sql:  # --sql: a mock connection, nothing runs on any database
            refuse_another_database(attributes, context.connection)

    configure.__wrapped__ = original  # type: ignore[attr-defined]
    configure.__doc__ = original.__doc__
    return configure


def _transactional_sqlite(connection: Any, options: dict[str, Any], settings: Any) -> None:
    """SQLite's DDL in the migration's transaction, for every ``env.py`` (not only ours): a
    failed start leaves nothing behind. Alembic takes SQLite's DDL for non-transactional, and
    ``env.py`` files rarely say otherwise; one that passes ``transactional_ddl`` is obeyed.
    Another writer is waited for, within ``MIGRATE_LOCK_TIMEOUT``."""
    if isinstance(connection, _Borrowed):
        connection = connection._connection
    if not isinstance(connection, Connection) or connection.dialect.name != "sqlite":
        return
    if isinstance(settings, MigrateSettings) and not connection.in_transaction():
        migrates_after_writers(connection, settings.lock_timeout)
    if "transactional_ddl" not in options and emits_begin(connection):
        options["transactional_ddl"] = True


if not hasattr(EnvironmentContext.configure, "__wrapped__"):
    EnvironmentContext.configure = _checked_configure(EnvironmentContext.configure)  # type: ignore[method-assign]


def _environment(settings: MigrateSettings, *args: Any, **kwargs: Any) -> EnvironmentContext:
    """The checked environment where Alembic's ``context`` module can proxy a subclass (its
    proxies are registered per class), else Alembic's own (``verify`` then reports it)."""
    setups = getattr(EnvironmentContext, "_setups", None)
    if not isinstance(setups, dict) or EnvironmentContext not in setups:
        return EnvironmentContext(*args, **kwargs)
    setups.setdefault(_CheckedEnvironment, setups[EnvironmentContext])
    environment = _CheckedEnvironment(*args, **kwargs)
    environment.settings = settings
    return environment


def stamp(
    connection: Connection, script: ScriptDirectory, settings: MigrateSettings, revision: str
) -> None:
    """Write ``revision`` into the version table on ``connection`` (created if missing)."""
    context = MigrationContext.configure(connection, opts=environment_options(settings))
    context.stamp(script, revision)


def failed_revision(
    error: BaseException, script: ScriptDirectory, pending: tuple[str, ...]
) -> str | None:
    """Which pending revision's file raised, read from the traceback."""
    paths: dict[str, str] = {}
    for revision in pending:
        found = script.get_revision(revision)
        if found is not None and found.path:
            paths[str(Path(found.path).resolve())] = revision
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        failed = paths.get(str(Path(frame.filename).resolve()))
        if failed is not None:
            return failed
    return None


def failed_outside_migrations(error: BaseException) -> bool:
    """Whether ``error`` was raised outside Alembic's ``MigrationContext.run_migrations`` (so by
    ``env.py`` itself, before or after the revisions), read from the traceback."""
    return not any(
        frame.name == "run_migrations" and Path(frame.filename).resolve() == _MIGRATION_MODULE
        for frame in traceback.extract_tb(error.__traceback__)
    )


_MIGRATION_MODULE = Path(alembic.runtime.migration.__file__).resolve()


def run_on_connection(
    settings: MigrateSettings,
    connection: DedicatedConnection,
    run: Callable[[Config], object],
    metadata: MetaData | None = None,
) -> None:
    """Run ``env.py`` (through ``run``, given the Config) on our connection where the driver is
    sync (async ones open their own), inside env.py's own transaction; whatever it leaves open
    without committing is committed here, and rolled back if it raised."""
    sync = connection.sync_connection
    cfg = alembic_config(settings, metadata=metadata, connection=sync)
    with preserved_logging(), _connectable(sync):
        try:
            run(cfg)
        except BaseException:
            if sync is not None and sync.in_transaction():
                sync.rollback()
            raise
    if sync is not None and sync.in_transaction():
        sync.commit()


class _Borrowed:
    """What ``.connect()`` gives an ``env.py`` that takes ``config.attributes["connection"]`` for
    an Engine: our connection, which its ``with`` block (or ``close()``) must not close."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def __enter__(self) -> Connection:
        return self._connection

    def __exit__(self, *_: object) -> None:
        return None

    def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@contextmanager
def _connectable(connection: Connection | None) -> Iterator[None]:
    """Within the block ``connection.connect()`` works as ``Engine.connect()`` does (pytest-
    alembic's ``env.py`` convention, copied into many projects)."""
    if connection is None:
        yield
        return
    connection.__dict__["connect"] = lambda: _Borrowed(connection)
    try:
        yield
    finally:
        connection.__dict__.pop("connect", None)
