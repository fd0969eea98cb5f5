"""The thin layer over Alembic: its Config, its scripts, and running ``env.py`` once."""

from __future__ import annotations

import argparse
import logging
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData

from .errors import ConfigurationError
from .logging_guard import preserved_logging
from .settings import MigrateSettings

log = logging.getLogger("fastapi_migrate")

_LOGGING_SECTIONS = ("loggers", "handlers", "formatters")


def alembic_config(
    settings: MigrateSettings,
    *,
    url: str | None = None,
    metadata: MetaData | None = None,
    connection: Connection | None = None,
) -> Config:
    """An Alembic ``Config`` built from the settings, with no file name for ``env.py`` to feed
    to ``fileConfig``; the URL reaches ``env.py`` as ``sqlalchemy.url``, ``-x url=`` and
    ``config.attributes``."""
    url = url if url is not None else settings.ddl_url
    if settings.config is not None:
        cfg = Config(str(settings.config))
        cfg.file_config  # noqa: B018 - parse the ini (and its %(here)s) while the name is known
        for section in _LOGGING_SECTIONS:
            cfg.file_config.remove_section(section)
        cfg.config_file_name = None
    else:
        cfg = Config()
    location = settings.script_location or cfg.get_main_option("script_location") or "migrations"
    cfg.set_main_option("script_location", location)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        cfg.cmd_opts = argparse.Namespace(x=[f"url={url}"])
    cfg.attributes.update(
        {
            "fastapi_migrate": True,
            "database_url": url,
            "settings": settings,
            "target_metadata": metadata,
            "version_table": settings.version_table,
            "version_table_schema": settings.version_table_schema,
        }
    )
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def load_scripts(cfg: Config) -> ScriptDirectory:
    """The revision graph, loaded now so that a broken folder is a clear configuration error."""
    location = cfg.get_main_option("script_location")
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            script = ScriptDirectory.from_config(cfg)
            script.revision_map.heads  # noqa: B018 - read every revision file, find cycles
    except CommandError as error:
        hint = ""
        if location and not Path(location.split(":")[-1]).exists() and ":" not in location:
            hint = " (set MIGRATE_SCRIPT_LOCATION, or create it with: fastapi-migrate init)"
        raise ConfigurationError(f"migration scripts in {location!r}: {error}{hint}") from None
    except SyntaxError as error:
        raise ConfigurationError(
            f"migration scripts in {location!r}: {error.filename}, line {error.lineno}: {error.msg}"
        ) from None
    except Exception as error:
        # A down_revision naming no file: Alembic warns "Revision X referenced from X -> Y is
        # not present", then fails on a bare KeyError. The warning is the useful part.
        missing = [
            " ".join(str(w.message).split()) for w in warned if "not present" in str(w.message)
        ]
        if missing:
            raise ConfigurationError(
                f"migration scripts in {location!r}: {'; '.join(missing)} (a down_revision "
                "names a revision that no file in the versions folder has)"
            ) from None
        raise ConfigurationError(
            f"migration scripts in {location!r} could not be loaded: "
            f"{type(error).__name__}: {error}"
        ) from None
    for w in warned:  # loaded fine: let its warnings through as usual
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return script


def environment_options(settings: MigrateSettings) -> dict[str, Any]:
    """Options every ``env.py`` gets unless it overrides them in ``context.configure``."""
    options: dict[str, Any] = {"version_table": settings.version_table}
    if settings.version_table_schema is not None:
        options["version_table_schema"] = settings.version_table_schema
    return options


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
