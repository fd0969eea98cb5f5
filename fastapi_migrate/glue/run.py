"""Running ``env.py``: upgrades with a callback per revision, stamps, and Alembic commands on
our own connection, with the app's logging kept as it was."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData

from ..backends.database import DedicatedConnection
from ..core.settings import MigrateSettings
from .config import alembic_config, environment_options
from .logging_guard import preserved_logging


def run_upgrade(
    cfg: Config,
    script: ScriptDirectory,
    settings: MigrateSettings,
    target: str,
    on_applied: Callable[[str, float], None],
) -> None:
    """Run ``env.py`` to upgrade to ``target``, reporting each applied revision and its time.

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
        return script._upgrade_revs(target, rev)

    with (
        preserved_logging(),
        EnvironmentContext(
            cfg,
            script,
            fn=upgrade,
            as_sql=False,
            destination_rev=target,
            **environment_options(settings),
        ),
    ):
        script.run_env()


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
    with preserved_logging():
        try:
            run(cfg)
        except BaseException:
            if sync is not None and sync.in_transaction():
                sync.rollback()
            raise
    if sync is not None and sync.in_transaction():
        sync.commit()
