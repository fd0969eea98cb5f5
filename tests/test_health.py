"""``health_router``: GET /health/migrations against real databases, through the app's lifespan."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import MigrateSettings, health_router, migrate, migrate_on_startup

from .support import add_revision, execute, to_async, write_migrations

SERVERS = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
ROUTE = "/health/migrations"


def make_app(**overrides: object) -> FastAPI:
    app = FastAPI(lifespan=migrate_on_startup(**overrides))
    app.include_router(health_router)
    return app


@SERVERS
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_pending_until_another_process_migrates_then_ok(
    project: Path, database_url: str, driver: str
) -> None:
    write_migrations(project, 3)
    migrate(MigrateSettings(database_url=database_url, target="r2"))
    url = to_async(database_url) if driver == "async" else database_url
    with TestClient(make_app(database_url=url, mode="off")) as client:
        pending = client.get(ROUTE)
        assert pending.status_code == 503
        assert pending.json() == {"status": "pending", "current": "r2", "head": "r3"}

        migrate(MigrateSettings(database_url=database_url))  # e.g. a release job
        ok = client.get(ROUTE)
    assert ok.status_code == 200
    assert ok.json() == {"status": "ok", "current": "r3", "head": "r3"}


@SERVERS
def test_wait_mode_app_answers_ok_once_served(project: Path, database_url: str) -> None:
    write_migrations(project, 2)
    migrate(MigrateSettings(database_url=database_url))
    with TestClient(make_app(database_url=to_async(database_url), mode="wait")) as client:
        response = client.get(ROUTE)
        assert client.app.state.migration.action == "noop"  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "current": "r2", "head": "r2"}


@SERVERS
def test_head_is_read_once_at_startup_not_per_request(project: Path, database_url: str) -> None:
    location = write_migrations(project, 2)
    with TestClient(make_app(database_url=database_url)) as client:
        assert client.get(ROUTE).json() == {"status": "ok", "current": "r2", "head": "r2"}
        # New code lands on disk next to the running app: the app still expects r2 (its
        # code), so it stays ready; a probe that re-read the folder would now say pending.
        add_revision(location, "r3", "r2", table="t3")
        again = client.get(ROUTE)
        assert again.status_code == 200
        assert again.json() == {"status": "ok", "current": "r2", "head": "r2"}

        # The newer release migrates (rolling deploy): this older replica stays ready.
        migrate(MigrateSettings(database_url=database_url))
        ahead = client.get(ROUTE)
    assert ahead.status_code == 200
    assert ahead.json() == {"status": "ahead", "current": "r3", "head": "r2"}


def test_errors_answer_503_without_the_url(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_migrations(project, 1)
    url = "postgresql+psycopg://app:hunter2-secret@127.0.0.1:1/orders"
    with (
        TestClient(make_app(database_url=url, mode="off")) as client,
        caplog.at_level(logging.WARNING, logger="fastapi_migrate"),
    ):
        response = client.get(ROUTE)
    assert response.status_code == 503
    assert response.json() == {"status": "error", "current": None, "head": "r1"}
    assert "migration status unavailable" in caplog.text
    for secret in ("hunter2", "127.0.0.1", "orders"):
        assert secret not in response.text
    assert "hunter2" not in caplog.text


def test_router_alone_reads_settings_from_the_environment(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_migrations(project, 2)
    url = f"sqlite:///{tmp_path / 'plain.sqlite'}"
    migrate(MigrateSettings(database_url=url, target="r1"))
    monkeypatch.setenv("DATABASE_URL", url)
    app = FastAPI()  # migrations run elsewhere; only the probe is mounted
    app.include_router(health_router)
    with TestClient(app) as client:
        response = client.get(ROUTE)
    assert response.status_code == 503
    assert response.json() == {"status": "pending", "current": "r1", "head": "r2"}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_probe_survives_a_dropped_connection_and_a_second_event_loop(
    project: Path, database_url: str, driver: str
) -> None:
    write_migrations(project, 1)
    url = to_async(database_url) if driver == "async" else database_url
    app = make_app(database_url=url)
    ok = {"status": "ok", "current": "r1", "head": "r1"}
    with TestClient(app) as client:
        assert client.get(ROUTE).json() == ok
        # The server drops the probe's connection (restart, idle timeout, pooler).
        execute(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert client.get(ROUTE).json() == ok
    with TestClient(app) as client:  # the same app on a new event loop, as test suites do
        assert client.get(ROUTE).json() == ok


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_each_start_probes_its_own_database_and_shutdown_closes_it(
    project: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One module-level app started twice on two databases, as a per-test fixture does."""
    write_migrations(project, 2)
    behind = f"sqlite:///{tmp_path / 'behind.sqlite'}"
    migrate(MigrateSettings(database_url=behind, target="r1"))
    app = FastAPI(lifespan=migrate_on_startup(mode="off"))
    app.include_router(health_router)
    backends = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"

    monkeypatch.setenv("DATABASE_URL", database_url)
    migrate(MigrateSettings(database_url=database_url))
    with TestClient(app) as client:
        assert client.get(ROUTE).json() == {"status": "ok", "current": "r2", "head": "r2"}
        assert execute(database_url, backends)[0] == [(2,)]  # the probe's and this query's
    assert execute(database_url, backends)[0] == [(1,)]  # shut down: the probe's is closed

    monkeypatch.setenv("DATABASE_URL", behind)
    with TestClient(app) as client:
        response = client.get(ROUTE)
    assert response.status_code == 503
    assert response.json() == {"status": "pending", "current": "r1", "head": "r2"}
