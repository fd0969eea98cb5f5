"""MIGRATE_DATABASE_URL: DDL runs as the schema's owner, the app keeps a least-privileged role."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import (
    MigrateSettings,
    MigrationFailed,
    MigrationResult,
    health_router,
    migrate,
    migrate_on_startup,
)

from .support import current_revisions, execute, table_names, unique_name, write_migrations


@pytest.fixture
def app_role_url(database_url: str) -> Iterator[str]:
    """A role that may read and write rows but create nothing; dropped afterwards."""
    role = unique_name("fm_app")  # roles are server-wide: never reuse a name
    owner = sa.make_url(database_url).username
    execute(
        database_url,
        f"CREATE ROLE {role} LOGIN PASSWORD 'app-pw-123'",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    )
    try:
        yield (
            sa.make_url(database_url)
            .set(username=role, password="app-pw-123")
            .render_as_string(hide_password=False)
        )
    finally:
        execute(database_url, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_ddl_runs_with_migrate_database_url_while_the_app_role_stays_least_privileged(
    project: Path, database_url: str, app_role_url: str
) -> None:
    write_migrations(project, 2)

    with pytest.raises(MigrationFailed) as failed:
        migrate(MigrateSettings(database_url=app_role_url))
    message = str(failed.value)
    assert "permission denied for schema public" in message
    assert "set MIGRATE_DATABASE_URL" in message
    assert "app-pw-123" not in message
    assert failed.value.revision == "r1"
    assert table_names(database_url) == set()

    settings = MigrateSettings(database_url=app_role_url, migrate_database_url=database_url)
    result = migrate(settings)
    assert (result.action, result.applied) == ("upgraded", ["r1", "r2"])
    assert current_revisions(database_url) == {"r2"}
    owners = execute(
        database_url, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
    )
    assert owners == [[(sa.make_url(database_url).username,)]]

    # The app role uses the tables, and starts (no-op) and answers ready with its own URL.
    rows = execute(app_role_url, "INSERT INTO t1 (name) VALUES ('kept')", "SELECT name FROM t1")
    assert rows[1] == [("kept",)]
    app = FastAPI(lifespan=migrate_on_startup(database_url=app_role_url))
    app.include_router(health_router)
    with TestClient(app) as client:
        assert app.state.migration.action == "noop"
        health = client.get("/health/migrations")
    assert health.json() == {"status": "ok", "current": "r2", "head": "r2"}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_wait_mode_with_the_app_role_outlasts_failed_reads(
    project: Path, database_url: str, app_role_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 2)
    migrate(MigrateSettings(database_url=database_url, target="r1"))
    waiting = MigrateSettings(database_url=app_role_url, mode="wait", lock_timeout=30)
    role = sa.make_url(app_role_url).username
    outcome: list[object] = []
    caplog.set_level(logging.DEBUG, logger="fastapi_migrate")
    waiter = threading.Thread(target=lambda: outcome.append(_run(waiting)))
    waiter.start()
    try:
        assert _logged(caplog, "MIGRATE_MODE=wait: the database is at r1"), outcome
        # The app's reads start failing (a privilege lost, a server restarting...)...
        execute(database_url, f"REVOKE SELECT ON alembic_version FROM {role}")
        assert _logged(caplog, "reading the database failed"), "the waiter never retried"
        # ...then work again, and the release job migrates: the waiter serves.
        execute(database_url, f"GRANT SELECT ON alembic_version TO {role}")
        migrate(MigrateSettings(database_url=database_url))
    finally:
        waiter.join(30)
    [result] = outcome
    assert isinstance(result, MigrationResult), result
    assert (result.action, result.from_revision, result.to_revision) == ("waited", "r1", "r2")
    assert "app-pw-123" not in caplog.text


def _run(settings: MigrateSettings) -> object:
    try:
        return migrate(settings)
    except Exception as error:  # handed to the test thread
        return error


def _logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in record.getMessage() for record in list(caplog.records)):
            return True
        time.sleep(0.05)
    return False
