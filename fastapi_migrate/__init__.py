"""fastapi-migrate: a FastAPI app brings its database schema up to date with Alembic on start."""

import importlib
from typing import TYPE_CHECKING, Any

from .foundation.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    LockLost,
    LockTimeout,
    MigrationError,
    MigrationFailed,
    MultipleHeads,
    PendingMigrations,
    UnknownRevision,
    UnsafeMigration,
    UnversionedDatabase,
)

if TYPE_CHECKING:
    from .engine.start import migrate
    from .foundation.result import MigrationResult
    from .foundation.settings import MigrateSettings
    from .foundation.trees import MigrationTree
    from .web.health import health_router
    from .web.lifespan import migrate_on_startup

# Imported on first use: Alembic, SQLAlchemy, pydantic-settings and FastAPI cost about a second
# that every pytest run (the plugin loads this package), every CLI command and every import of
# the errors would pay.
_LAZY = {
    "migrate": ".engine.start",
    "MigrationResult": ".foundation.result",
    "MigrateSettings": ".foundation.settings",
    "MigrationTree": ".foundation.trees",
    "health_router": ".web.health",
    "migrate_on_startup": ".web.lifespan",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastapi_migrate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "LockLost",
    "LockTimeout",
    "MigrateSettings",
    "MigrationError",
    "MigrationFailed",
    "MigrationResult",
    "MigrationTree",
    "MultipleHeads",
    "PendingMigrations",
    "UnknownRevision",
    "UnsafeMigration",
    "UnversionedDatabase",
    "health_router",
    "migrate",
    "migrate_on_startup",
]
