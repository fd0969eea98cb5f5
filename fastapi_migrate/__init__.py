"""fastapi-migrate: a FastAPI app brings its database schema up to date with Alembic on start."""

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    LockTimeout,
    MigrationError,
    MigrationFailed,
    MultipleHeads,
    PendingMigrations,
    UnknownRevision,
    UnversionedDatabase,
)
from .lifespan import migrate_on_startup
from .migration_tree import MigrationTree
from .result import MigrationResult
from .runner import migrate
from .settings import MigrateSettings

if TYPE_CHECKING:
    from .health import health_router


def __getattr__(name: str) -> Any:
    # Imported on first use: FastAPI costs ~0.5 s that every `fastapi-migrate` command paid.
    if name == "health_router":
        from .health import health_router

        return health_router
    raise AttributeError(f"module 'fastapi_migrate' has no attribute {name!r}")


__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
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
