"""``migrate_on_startup``: the FastAPI adapter, a lifespan that migrates before serving."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import anyio.to_thread
from sqlalchemy import MetaData

from ..engine.seed import Seed, checked_seed
from ..engine.start import begin, checks_a_local_file, migrate
from ..foundation.errors import ConfigurationError, MigrationError
from ..foundation.lent import lent_url, on_lent_database
from ..foundation.redaction import error_line
from ..foundation.result import MigrationResult
from ..foundation.settings import MigrateSettings, url_optional
from .logs import ensure_visible
from .readiness import close_probe
from .shutdown import ShutdownDuringStartup, names, noticing

log = logging.getLogger("fastapi_migrate")

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def migrate_on_startup(
    lifespan: Lifespan | None = None,
    *,
    settings: MigrateSettings | None = None,
    metadata: MetaData | None = None,
    **overrides: Any,
) -> Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]:
    """A lifespan that brings the database to the target revision, then runs ``lifespan``.

    Settings are read when the app starts, not at import, so tests and containers can set the
    environment late. The migration runs in a worker thread: Alembic is blocking, and an async
    ``env.py`` calls ``asyncio.run()``, which cannot run inside the server's event loop.
    ``seed=`` is ``MIGRATE_SEED``'s ``module:function``, or the function itself.
    """
    seed = overrides.pop("seed", None)
    if seed is not None and not isinstance(seed, str):
        seed_function: Seed | None = checked_seed(seed, repr(seed))
    else:
        seed_function = None
        if seed is not None:
            overrides["seed"] = seed
    unknown = set(overrides) - set(MigrateSettings.model_fields)
    if unknown:
        raise ConfigurationError(
            f"migrate_on_startup: unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(MigrateSettings.model_fields)}"
        )

    @asynccontextmanager
    async def migrating_lifespan(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        ensure_visible()
        current: MigrateSettings | None = None
        try:
            current = _settings(settings, overrides)
            with noticing() as received:
                result = await _migrate(current, metadata, seed_function)
        except Exception as error:
            # The one line every failed start prints first, whatever failed: a setting, the
            # migration, or something that is not a MigrationError.
            log.error("migration failed, the app will not start: %s", _reason(error, current))
            raise
        if received:
            raise _stopped(received, result)
        app.state.migration = result
        app.state.migration_settings = current
        # A probe from an earlier start of this app object may look at another database.
        app.state.migration_probe = None
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            await close_probe(app)

    return migrating_lifespan


def _stopped(received: list[int], result: MigrationResult) -> ShutdownDuringStartup:
    """Logged and raised when a shutdown signal came during the migration: the migration ran
    to its end (committed), but the server must not report ready nor open its port."""
    message = (
        f"{names(received)} received while migrating: the migration finished "
        f"({result.summary()}), the app will not start"
    )
    log.error("%s", message)
    return ShutdownDuringStartup(message)


async def _migrate(
    settings: MigrateSettings, metadata: MetaData | None, seed: Seed | None
) -> MigrationResult:
    """``migrate`` in a worker thread, except a no-op start on a SQLite file: its check cannot
    wait on a network, and it spares the thread (the first costs about a millisecond)."""
    if not checks_a_local_file(settings):
        return await anyio.to_thread.run_sync(
            lambda: migrate(settings, metadata=metadata, seed=seed)
        )
    with begin(settings, metadata, seed) as start:
        assert start is not None  # mode off checks nothing
        result = start.local_noop()
        if result is None:
            result = await anyio.to_thread.run_sync(start.run)
    log.info(result.summary())
    return result


def _reason(error: Exception, settings: MigrateSettings | None) -> str:
    """A MigrationError's message (passwords already masked), else its first line with every
    URL this start may have seen masked."""
    if isinstance(error, MigrationError):
        return str(error)
    urls = [os.environ.get(name) for name in ("DATABASE_URL", "MIGRATE_DATABASE_URL")]
    if settings is not None:
        urls += [settings.database_url, settings.migrate_database_url]
    return error_line(error, urls)


def _settings(settings: MigrateSettings | None, overrides: Mapping[str, Any]) -> MigrateSettings:
    # Inside a test the URL is the lent database's: the app's own need not be set.
    with url_optional() if lent_url() is not None else nullcontext():
        if settings is None:
            current = MigrateSettings(**overrides)
        elif not overrides:
            current = settings
        else:
            current = type(settings)(**{**settings.model_dump(), **overrides})
    return on_lent_database(current)
