"""MIGRATE_MODE under real uvicorn processes: wait serves only once another process migrated,
check refuses to start behind, off never touches the database."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from fastapi_migrate import LockTimeout, MigrateSettings, migrate

from .production_helpers import (
    Output,
    assert_not_serving,
    migrate_in_another_process,
    write_app,
)
from .support import (
    current_revisions,
    start_uvicorn,
    stop,
    subprocess_env,
    table_names,
    to_async,
    wait_http,
    write_migrations,
)

SERVERS = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@SERVERS
def test_wait_mode_serves_only_after_another_process_migrates(
    project: Path, database_url: str, backend: str
) -> None:
    write_migrations(project, 3)
    write_app(project)
    migrate(MigrateSettings(database_url=database_url, target="r1"))  # the previous release
    # The app uses the async driver on PostgreSQL, as a FastAPI app usually does.
    app_url = to_async(database_url) if backend == "postgresql" else database_url
    env = subprocess_env(DATABASE_URL=app_url, MIGRATE_MODE="wait", MIGRATE_LOCK_TIMEOUT="60")
    proc, port = start_uvicorn("app:app", project, env)
    output = Output(proc)
    try:
        output.wait_for("MIGRATE_MODE=wait: the database is at r1")
        assert_not_serving(port, proc, seconds=1)
        assert current_revisions(database_url) == {"r1"}  # a waiting app runs no DDL
        assert "t2" not in table_names(database_url)

        job = migrate_in_another_process(project, subprocess_env(DATABASE_URL=database_url))
        assert job.returncode == 0, job.stderr

        assert wait_http(port, "/health/migrations", proc, timeout=15) == 200
        health = httpx2.get(f"http://127.0.0.1:{port}/health/migrations").json()
        assert health == {"status": "ok", "current": "r3", "head": "r3"}
        result = httpx2.get(f"http://127.0.0.1:{port}/migration").json()
        assert result == {"action": "waited", "from": "r1", "to": "r3", "applied": []}
    finally:
        printed = output.stop()
    assert "migration waited: from r1 to r3" in printed


@SERVERS
def test_wait_mode_gives_up_after_lock_timeout_without_ddl(
    project: Path, database_url: str
) -> None:
    write_migrations(project, 2)
    migrate(MigrateSettings(database_url=database_url, target="r1"))
    settings = MigrateSettings(database_url=database_url, mode="wait", lock_timeout=0.5)
    with pytest.raises(LockTimeout, match=r"at r1, not at head \(r2\).*MIGRATE_LOCK_TIMEOUT"):
        migrate(settings)
    assert current_revisions(database_url) == {"r1"}
    assert "t2" not in table_names(database_url)


@SERVERS
def test_check_mode_exits_nonzero_when_behind_and_passes_at_head(
    project: Path, database_url: str
) -> None:
    write_migrations(project, 2)
    write_app(project)
    migrate(MigrateSettings(database_url=database_url, target="r1"))
    env = subprocess_env(DATABASE_URL=database_url, MIGRATE_MODE="check")

    proc, _ = start_uvicorn("app:app", project, env)
    returncode = proc.wait(60)
    output = stop(proc)
    assert returncode != 0
    assert "PendingMigrations" in output
    assert "MIGRATE_MODE=check" in output and "r2" in output
    assert current_revisions(database_url) == {"r1"}
    assert "t2" not in table_names(database_url)

    migrate(MigrateSettings(database_url=database_url))  # the release job ran
    at_head = migrate(MigrateSettings(database_url=database_url, mode="check"))
    assert (at_head.action, at_head.from_revision, at_head.applied) == ("noop", "r2", [])


def test_off_mode_serves_with_an_unreachable_database(project: Path) -> None:
    write_app(project)  # no migrations folder either: off mode reads nothing
    url = "postgresql+psycopg://app:hunter2-secret@127.0.0.1:1/nowhere"
    env = subprocess_env(DATABASE_URL=url, MIGRATE_MODE="off")
    proc, port = start_uvicorn("app:app", project, env)
    try:
        assert wait_http(port, "/migration", proc) == 200
        result = httpx2.get(f"http://127.0.0.1:{port}/migration").json()
        health = httpx2.get(f"http://127.0.0.1:{port}/health/migrations")
    finally:
        output = stop(proc)
    assert result == {"action": "skipped", "from": None, "to": None, "applied": []}
    assert health.status_code == 503
    assert health.json()["status"] == "error"
    assert "hunter2" not in health.text and "127.0.0.1" not in health.text
    assert "hunter2" not in output
