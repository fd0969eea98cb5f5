"""Find the app's ``MetaData``: given directly, or as a ``module:attr`` path."""

from __future__ import annotations

from sqlalchemy import MetaData

from .errors import ConfigurationError
from .imports import import_object


def import_metadata(path: str) -> MetaData:
    """Import ``package.module:Base.metadata`` (the current directory is importable)."""
    value = import_object(
        path, "MIGRATE_METADATA", "module:attribute (e.g. app.models:Base.metadata)"
    )
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
