"""Find the app's ``MetaData``: given directly, or as a ``module:attr`` path."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from sqlalchemy import MetaData

from .errors import ConfigurationError


def import_metadata(path: str) -> MetaData:
    """Import ``package.module:Base.metadata`` (the current directory is importable)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"MIGRATE_METADATA: {path!r} is not of the form module:attribute "
            "(e.g. app.models:Base.metadata)"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        value: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"MIGRATE_METADATA: cannot import {module_name!r}: {error}"
        ) from None
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(
                f"MIGRATE_METADATA: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(value, MetaData):
        raise ConfigurationError(
            f"MIGRATE_METADATA: {path!r} is a {type(value).__name__}, not a SQLAlchemy MetaData"
        )
    return value


def resolve_metadata(metadata: MetaData | None, path: str | None) -> MetaData | None:
    """The metadata passed in wins; else the ``MIGRATE_METADATA`` path; else none."""
    if metadata is not None:
        return metadata
    return import_metadata(path) if path else None


def require_tables(metadata: MetaData | None) -> MetaData:
    """``create_all`` on empty metadata would stamp an empty schema at head: refuse it."""
    if metadata is None:
        raise ConfigurationError(
            "MIGRATE_EMPTY_DATABASE=create_all needs the app's metadata: pass "
            "migrate_on_startup(metadata=Base.metadata) or set "
            "MIGRATE_METADATA=app.models:Base.metadata"
        )
    if not metadata.tables:
        raise ConfigurationError(
            "MIGRATE_EMPTY_DATABASE=create_all: the metadata has no tables, so create_all would "
            "stamp an empty schema at head; import the modules that define the models before "
            "passing their metadata"
        )
    return metadata
