"""Reads the database refuses. SQLite with another writer: a process holding ``BEGIN
IMMEDIATE`` or ``BEGIN EXCLUSIVE`` for a few seconds makes a start wait (within
``MIGRATE_LOCK_TIMEOUT``), never fail with the driver's ``database is locked``; what does
escape is a ``MigrationError``, as for a PostgreSQL role that may not read the version table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import (
    LockTimeout,
    MigrateSettings,
    MigrationError,
    migrate,
    migrate_on_startup,
)

from .conftest import require_backend
from .support import (
    PG_SERVER,
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    table_names,
    unique_name,
    write_migrations,
)

HOLDER = """\
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN " + sys.argv[2])
connection.execute("CREATE TABLE IF NOT EXISTS other_writer (id INTEGER)")
print("held", flush=True)
time.sleep(float(sys.argv[3]))
connection.execute("COMMIT")
"""


@contextmanager
def another_writer(path: Path, mode: str, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """A process holding a write transaction on ``path`` for ``seconds``, already holding it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.wait(timeout=60)


@pytest.fixture
def at_r1(project: Path, tmp_path: Path) -> tuple[Path, str]:
    location = write_migrations(project, 1)
    path = tmp_path / "app.db"
    migrate(MigrateSettings(database_url=f"sqlite:///{path}"))
    add_revision(location, "r2", "r1", table="t2")
    return path, f"sqlite:///{path}"


@pytest.mark.parametrize("mode", ["IMMEDIATE", "EXCLUSIVE"])
def test_upgrade_waits_for_another_writer(at_r1: tuple[Path, str], mode: str) -> None:
    path, url = at_r1
    with another_writer(path, mode, 2):
        result = migrate(MigrateSettings(database_url=url, lock_timeout=60))

    assert result.applied == ["r2"]
    assert current_revisions(url) == {"r2"}
    assert {"t1", "t2", "other_writer"} <= table_names(url)


def test_wait_mode_waits_for_another_writer(at_r1: tuple[Path, str]) -> None:
    path, url = at_r1
    migrate(MigrateSettings(database_url=url))  # at r2, the head
    with another_writer(path, "EXCLUSIVE", 2):
        result = migrate(MigrateSettings(database_url=url, mode="wait", lock_timeout=60))

    assert result.action == "noop"
    assert current_revisions(url) == {"r2"}


@pytest.mark.parametrize("mode", ["upgrade", "wait"])
def test_a_writer_longer_than_the_lock_timeout_is_a_migration_error(
    at_r1: tuple[Path, str], mode: str
) -> None:
    path, url = at_r1
    with another_writer(path, "EXCLUSIVE", 6), pytest.raises(MigrationError) as caught:
        migrate(MigrateSettings(database_url=url, mode=mode, lock_timeout=1))

    assert isinstance(caught.value, LockTimeout), repr(caught.value)
    assert "MIGRATE_LOCK_TIMEOUT" in str(caught.value)
    assert current_revisions(url) == {"r1"}


@pytest.mark.parametrize("mode", ["upgrade", "wait", "check"])
def test_a_role_that_may_not_read_the_version_table_gets_a_migration_error(
    project: Path, tmp_path: Path, mode: str
) -> None:
    require_backend("postgresql")
    write_migrations(project, 1)
    role = unique_name("fm_nosel")
    with fresh_database("postgresql", tmp_path) as url:
        migrate(MigrateSettings(database_url=url))
        execute(PG_SERVER, f"CREATE ROLE {role} LOGIN")
        try:
            execute(url, f"GRANT USAGE ON SCHEMA public TO {role}")
            limited = sa.make_url(url).set(username=role).render_as_string(hide_password=False)

            with pytest.raises(MigrationError) as caught:
                migrate(MigrateSettings(database_url=limited, mode=mode, lock_timeout=2))

            assert "permission denied" in str(caught.value), repr(caught.value)
            assert "alembic_version" in str(caught.value)
            assert current_revisions(url) == {"r1"}
        finally:
            execute(url, f"DROP OWNED BY {role}")
            execute(PG_SERVER, f"DROP ROLE {role}")


@pytest.mark.parametrize("mode", ["upgrade", "wait"])
def test_the_lifespan_waits_for_another_writer_then_serves(
    at_r1: tuple[Path, str], mode: str
) -> None:
    path, url = at_r1
    if mode == "wait":
        migrate(MigrateSettings(database_url=url))
    app = FastAPI(lifespan=migrate_on_startup(database_url=url, mode=mode, lock_timeout=60))
    with another_writer(path, "EXCLUSIVE", 2), TestClient(app):
        assert app.state.migration.to_revision == "r2"
    assert current_revisions(url) == {"r2"}


@pytest.mark.parametrize("mode", ["upgrade", "wait"])
def test_the_lifespan_lets_only_a_migration_error_out(at_r1: tuple[Path, str], mode: str) -> None:
    path, url = at_r1
    app = FastAPI(lifespan=migrate_on_startup(database_url=url, mode=mode, lock_timeout=1))
    writer = another_writer(path, "EXCLUSIVE", 6)
    with writer, pytest.raises(MigrationError) as caught, TestClient(app):
        pass
    assert isinstance(caught.value, LockTimeout), repr(caught.value)
    assert current_revisions(url) == {"r1"}
