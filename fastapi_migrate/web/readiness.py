"""``MigrationProbe``: the database's revision against the one the app expects, cheaply.

What the app expects is read once: from the startup's ``MigrationResult`` (the revision it
migrated or waited to), else from the scripts, once. A request then costs one connection and
one ``SELECT`` on the version table: no script folder is read per request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from sqlalchemy import Connection, Engine, create_engine, pool
from sqlalchemy.engine import URL

from ..backends import backend_for
from ..backends.drivers import is_async_url, parse_url
from ..engine.plan import ancestry, resolve_target
from ..engine.version_table import VersionTable, at_target
from ..foundation.lent import on_lent_database
from ..foundation.redaction import error_line
from ..foundation.result import MigrationResult
from ..foundation.settings import MigrateSettings
from ..glue.config import alembic_config, load_scripts

if TYPE_CHECKING:  # the asyncio extension needs greenlet: imported only for async URLs
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("fastapi_migrate")

# A probe that hangs is as bad as one that fails: give up connecting after a few seconds.
_CONNECT_TIMEOUT = {"psycopg": "connect_timeout", "psycopg2": "connect_timeout",
                    "pymysql": "connect_timeout", "aiomysql": "connect_timeout",
                    "asyncpg": "timeout"}  # fmt: skip
_CONNECT_SECONDS = 5


def _engine(url: URL) -> Engine | AsyncEngine:
    """A sync server driver keeps one connection (connecting costs more than the query); an
    async one connects per request, since a kept connection belongs to one event loop and an
    app may be served by several in turn (each ``TestClient`` block runs its own)."""
    timeout = _CONNECT_TIMEOUT.get(url.get_driver_name())
    options: dict[str, Any] = {"connect_args": {timeout: _CONNECT_SECONDS} if timeout else {}}
    if is_async_url(url):
        from sqlalchemy.ext.asyncio import create_async_engine

        return create_async_engine(url, poolclass=pool.NullPool, **options)
    if backend_for(url.get_backend_name()).connecting_is_cheap:
        return create_engine(url, poolclass=pool.NullPool, **options)
    return create_engine(
        url, pool_size=1, max_overflow=1, pool_pre_ping=True, pool_recycle=300, **options
    )


class MigrationProbe:
    """One per app: an engine on ``DATABASE_URL`` and the revisions the app expects."""

    def __init__(self, settings: MigrateSettings, result: MigrationResult | None) -> None:
        self.settings = settings
        self.url = parse_url(settings.database_url or "")
        self.engine = _engine(self.url)
        self._trees = [narrowed for _, narrowed in settings.each_tree()]
        self._expected: tuple[str, ...] | None = None
        self._below: frozenset[str] | None = None
        if result is not None and result.action != "skipped" and result.to_revision:
            self._expected = tuple(result.to_revision.split(","))

    def _load_scripts(self) -> None:
        """The target and every revision below it, from the scripts (of every migration tree),
        once per process."""
        expected: list[str] = []
        below: set[str] = set()
        for settings in self._trees:
            script = load_scripts(alembic_config(settings))
            targets = resolve_target(script, settings.target)
            expected += targets
            wanted = targets if self._expected is None else self._expected
            known = {s.revision for s in script.walk_revisions()}
            # Revisions the app knows at or below its target: the database there is behind.
            below |= set(ancestry(script, tuple(r for r in wanted if r in known)))
        if self._expected is None:
            self._expected = tuple(expected)
        self._below = frozenset(below)

    def _read(self, connection: Connection) -> tuple[str, ...]:
        return tuple(
            revision
            for settings in self._trees
            for revision in VersionTable(
                settings.version_table, settings.version_table_schema
            ).read_if_present(connection)
        )

    async def current(self) -> tuple[str, ...]:
        if not isinstance(self.engine, Engine):
            async with self.engine.connect() as conn:
                return await conn.run_sync(self._read)
        engine = self.engine

        def read() -> tuple[str, ...]:
            with engine.connect() as conn:
                return self._read(conn)

        return await anyio.to_thread.run_sync(read)

    async def close(self) -> None:
        """Close the probe's connections (the app shuts down)."""
        if not isinstance(self.engine, Engine):
            await self.engine.dispose()
        else:
            await anyio.to_thread.run_sync(self.engine.dispose)

    async def status(self) -> dict[str, Any]:
        """``{"status": "ok"|"ahead"|"pending"|"error", "current": ..., "head": ...}``."""
        try:
            if self._expected is None:
                await anyio.to_thread.run_sync(self._load_scripts)
            current = await self.current()
            if current and at_target(current, self._expected or ()):
                return _status("ok", current, self._expected)
            if current and self._below is None:
                await anyio.to_thread.run_sync(self._load_scripts)
        except Exception as error:
            reason = error_line(error, [self.url])
            log.warning("migration status unavailable: %s", reason)
            return _status("error", None, self._expected)
        # A revision above the target or unknown to these scripts: a newer release migrated
        # (rolling deploy); this replica's schema is still there, so it stays ready.
        if current and not set(current) <= (self._below or frozenset()):
            return _status("ahead", current, self._expected)
        return _status("pending", current, self._expected)


def _status(
    status: str, current: tuple[str, ...] | None, head: tuple[str, ...] | None
) -> dict[str, Any]:
    return {"status": status, "current": ",".join(current or ()) or None,
            "head": ",".join(head or ()) or None}  # fmt: skip


def probe_for(app: Any) -> MigrationProbe:
    """The app's probe, made on first use from what its startup recorded."""
    probe: MigrationProbe | None = getattr(app.state, "migration_probe", None)
    if probe is None:
        settings = getattr(app.state, "migration_settings", None) or MigrateSettings()
        settings = on_lent_database(settings)  # inside a test: the test's database
        result = getattr(app.state, "migration", None)
        probe = MigrationProbe(settings, result if isinstance(result, MigrationResult) else None)
        app.state.migration_probe = probe
    return probe


async def close_probe(app: Any) -> None:
    """Close and forget the app's probe, if a request made one."""
    probe: MigrationProbe | None = getattr(app.state, "migration_probe", None)
    app.state.migration_probe = None
    if probe is not None:
        await probe.close()
