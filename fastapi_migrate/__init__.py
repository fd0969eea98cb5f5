"""fastapi-migrate: a FastAPI app brings its database schema up to date with Alembic on start."""

from typing import TYPE_CHECKING, Any

from .core.engine import migrate
from .core.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    LockLost,
    LockTimeout,
    MigrationError,
    MigrationFailed,
    MultipleHeads,
    PendingMigrations,
    UnknownRevision,
    UnversionedDatabase,
)
from .core.result import MigrationResult
from .core.settings import MigrateSettings
from .core.trees import MigrationTree
from .web.lifespan import migrate_on_startup

if TYPE_CHECKING:
    from .web.health import health_router


def __getattr__(name: str) -> Any:
    # Imported on first use: FastAPI costs ~0.5 s that every `fastapi-migrate` command paid.
    if name == "health_router":
        from .web.health import health_router

        return health_router
    raise AttributeError(f"module 'fastapi_migrate' has no attribute {name!r}")


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
    "UnversionedDatabase",
    "health_router",
    "migrate",
    "migrate_on_startup",
]
