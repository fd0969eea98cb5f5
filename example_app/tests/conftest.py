"""How a project tests its app with fastapi-migrate's pytest plugin: every test gets its own
database at head (copied from a template migrated once per session) and the app started on it.

The plugin's databases go to a temporary SQLite file by default, or to a server given with
``--migrate-db-url`` / ``MIGRATE_TEST_DATABASE_URL`` (this app needs async URLs, e.g.
``sqlite+aiosqlite://`` or ``postgresql+asyncpg://postgres@127.0.0.1/test``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from example_app.main import ALEMBIC_INI, app
from fastapi_migrate import MigrateSettings


def pytest_configure(config: pytest.Config) -> None:
    """This app's engine is async: by default, test databases are SQLite files via aiosqlite."""
    os.environ.setdefault("MIGRATE_TEST_DATABASE_URL", "sqlite+aiosqlite://")


@pytest.fixture(scope="session")
def migrate_settings() -> MigrateSettings:
    """The settings the template is migrated with: the app's own migrations."""
    return MigrateSettings(config=ALEMBIC_INI)


@pytest.fixture
def client(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app, started on this test's database: its startup migration finds it at head."""
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    with TestClient(app) as client:
        assert app.state.migration.action == "noop"
        yield client
