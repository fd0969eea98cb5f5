"""Alembic's ``Config`` and scripts, built from ``MigrateSettings``: alembic.ini and
pyproject.toml's ``[tool.alembic]`` read as Alembic's command line reads them."""

from __future__ import annotations

import argparse
import configparser
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import alembic
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData

from ..foundation.errors import ConfigurationError
from ..foundation.settings import MigrateSettings

_LOGGING_SECTIONS = ("loggers", "handlers", "formatters")
# ``Config(toml_file=...)`` and ``get_alembic_option`` arrived in Alembic 1.16.
_READS_TOML = hasattr(Config, "get_alembic_option")


def alembic_option(cfg: Config, name: str) -> Any:
    """An option of ``[alembic]`` in alembic.ini, else of ``[tool.alembic]`` in pyproject.toml
    (a TOML value keeps its type: a list, a bool), else None."""
    value = cfg.get_alembic_option(name) if _READS_TOML else cfg.get_main_option(name)
    return value == "true" if value in ("true", "false") else value


def alembic_config(
    settings: MigrateSettings,
    *,
    url: str | None = None,
    metadata: MetaData | None = None,
    connection: Connection | None = None,
) -> Config:
    """An Alembic ``Config`` from the settings' alembic.ini and pyproject.toml. ``env.py`` sees
    the ini's file name, but ``fileConfig`` does nothing while it runs (``logging_guard``); the
    URL reaches it as ``sqlalchemy.url``, ``-x url=`` and ``config.attributes``."""
    url = url if url is not None else settings.ddl_url
    cfg = _read_files(*settings.config_files())
    location = settings.script_location or alembic_option(cfg, "script_location") or "migrations"
    # configparser reads a % as interpolation: MIGRATE_SCRIPT_LOCATION=100% is a folder name.
    cfg.set_main_option("script_location", location.replace("%", "%%"))
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


def _read_files(ini: Path | None, toml: Path | None) -> Config:
    """The files parsed now, so that a broken one is a clear ``ConfigurationError`` naming it;
    logging sections dropped (nothing of ours configures logging from them)."""
    options: dict[str, Any] = {}
    if toml is not None:
        if _READS_TOML:
            options["toml_file"] = str(toml)
        elif declares_tool_alembic(toml):
            raise ConfigurationError(
                f"{toml}: its [tool.alembic] table needs Alembic 1.16 or later (installed: "
                f"{alembic.__version__}): upgrade Alembic (pip install 'alembic>=1.16'), or "
                "move those options to the [alembic] section of an alembic.ini"
            )
    cfg = Config(str(ini) if ini is not None else None, **options)
    try:
        cfg.file_config  # noqa: B018 - parse the ini (and its %(here)s) now
        if toml is not None and _READS_TOML:
            cfg.toml_alembic_config  # noqa: B018 - likewise pyproject.toml
    except (configparser.Error, CommandError, ValueError, UnicodeDecodeError) as error:
        # tomllib's TOMLDecodeError is a ValueError
        problem = " ".join(str(error).split())
        raise ConfigurationError(
            f"Alembic's configuration ({', '.join(str(p) for p in (ini, toml) if p)}): {problem}"
        ) from None
    for section in _LOGGING_SECTIONS:
        cfg.file_config.remove_section(section)
    return cfg


_TOOL_ALEMBIC = re.compile(r"^\s*\[\s*tool\s*\.\s*alembic\s*[\].]|^\s*tool\s*\.\s*alembic\b", re.M)


def declares_tool_alembic(toml: Path) -> bool:
    """Whether pyproject.toml has a ``[tool.alembic]`` table (read without Alembic, which may
    be too old to read it)."""
    try:
        text = toml.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            tool = tomllib.loads(text).get("tool", {})
        except tomllib.TOMLDecodeError:
            return False
        return isinstance(tool, dict) and "alembic" in tool
    return _TOOL_ALEMBIC.search(text) is not None


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
    except ImportError as error:  # package:folder, and the package is not importable
        raise ConfigurationError(
            f"migration scripts in {location!r}: {error} (MIGRATE_SCRIPT_LOCATION, or "
            "script_location in alembic.ini: a folder, or package:folder of an importable "
            "package)"
        ) from None
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
