"""Alembic's ``Config`` and scripts, built from ``MigrateSettings``."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData

from ..core.errors import ConfigurationError
from ..core.settings import MigrateSettings

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
