"""``run_migrations``: all an ``env.py`` does, for the one ``fastapi-migrate init`` writes.

When fastapi-migrate runs ``env.py`` it hands over the URL, metadata, version table and (for sync
drivers) its open connection in ``config.attributes``; when the plain ``alembic`` command runs
it, they come from ``MigrateSettings``. SQLite gets batch mode and transactional DDL; async URLs
run under ``asyncio.run``; logging is never reconfigured.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Connection, MetaData, pool

from .backends import backend_for
from .backends.drivers import is_async_url, parse_url
from .backends.lease import LEASE_TABLE
from .foundation.metadata import resolve_metadata
from .foundation.settings import MigrateSettings, url_optional


def _settings() -> MigrateSettings:
    given = context.config.attributes.get("settings")
    if isinstance(given, MigrateSettings):
        return given
    with url_optional():
        return MigrateSettings()


def _url(settings: MigrateSettings) -> str:
    url = (
        context.config.attributes.get("database_url")
        or settings.ddl_url
        or context.config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise RuntimeError("no database URL: set DATABASE_URL")
    return str(url)


def _options(settings: MigrateSettings, dialect: str, extra: dict[str, Any]) -> dict[str, Any]:
    attributes = context.config.attributes
    metadata: MetaData | None = attributes.get("target_metadata") or resolve_metadata(
        None, settings.metadata
    )
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": attributes.get("version_table", settings.version_table),
        "version_table_schema": attributes.get(
            "version_table_schema", settings.version_table_schema
        ),
        "compare_type": True,
        **backend_for(dialect).environment_options,
    }
    options.update(extra)
    options["include_object"] = _without_lease(options.get("include_object"))
    return options


def _without_lease(include_object: Any) -> Any:
    """Autogenerate never sees the lock's lease table (as Alembic never shows its version
    table), whatever ``include_object`` the project passes on top."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and reflected and name == LEASE_TABLE:
            return False
        return include_object is None or bool(
            include_object(obj, name, type_, reflected, compare_to)
        )

    return include


def _run_on(connection: Connection, settings: MigrateSettings, extra: dict[str, Any]) -> None:
    context.configure(connection=connection, **_options(settings, connection.dialect.name, extra))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(**configure_options: Any) -> None:
    """Run the migrations ``env.py`` was invoked for; ``configure_options`` go to
    ``context.configure`` (``include_object``, ``compare_server_default``...)."""
    settings = _settings()
    url = parse_url(_url(settings))
    if context.is_offline_mode():
        context.configure(
            url=url,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **_options(settings, url.get_backend_name(), configure_options),
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_on(connection, settings, configure_options)
        return

    if is_async_url(url):
        from sqlalchemy.ext.asyncio import create_async_engine

        async def run_async() -> None:
            engine = create_async_engine(url, poolclass=pool.NullPool)
            backend_for(engine.dialect.name).engine_created(engine.sync_engine)
            try:
                async with engine.connect() as conn:
                    await conn.run_sync(_run_on, settings, configure_options)
                    await conn.commit()
            finally:
                await engine.dispose()

        asyncio.run(run_async())
        return

    from sqlalchemy import create_engine

    engine = create_engine(url, poolclass=pool.NullPool)
    backend_for(engine.dialect.name).engine_created(engine)
    try:
        with engine.connect() as conn:
            _run_on(conn, settings, configure_options)
            conn.commit()
    finally:
        engine.dispose()
