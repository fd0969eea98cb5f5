"""What a start prints: one INFO line under a default uvicorn, a DEBUG line per revision when
asked, never Alembic's own chatter; the result on ``app.state.migration``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import MigrateSettings, MigrationResult, migrate, migrate_on_startup

from .production_helpers import write_app
from .support import start_uvicorn, stop, subprocess_env, to_async, wait_http, write_migrations

SUMMARY = re.compile(
    r"^INFO: +migration upgraded: from base to r3, applied 3 \[r1,r2,r3\] in \d+\.\d{3}s$"
)
ALEMBIC_CHATTER = ("Context impl", "Will assume", "Running upgrade", "alembic")


def serve_once(project: Path, url: str, *args: str) -> tuple[dict[str, object], list[str]]:
    proc, port = start_uvicorn("app:app", project, subprocess_env(DATABASE_URL=url), *args)
    try:
        assert wait_http(port, "/migration", proc) == 200
        result = httpx2.get(f"http://127.0.0.1:{port}/migration").json()
    finally:
        output = stop(proc)
    return result, output.splitlines()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_default_uvicorn_run_prints_one_summary_line_and_no_alembic_lines(
    project: Path, database_url: str, backend: str
) -> None:
    write_migrations(project, 3)
    write_app(project)
    url = to_async(database_url) if backend == "postgresql" else database_url
    result, lines = serve_once(project, url)
    assert result == {"action": "upgraded", "from": None, "to": "r3", "applied": ["r1", "r2", "r3"]}
    server = [line for line in lines if "HTTP/1.1" not in line]  # not the access log
    ours = [line for line in server if "migrat" in line or "revision" in line]
    assert len(ours) == 1 and SUMMARY.match(ours[0]), lines
    assert not [line for line in lines if any(word in line for word in ALEMBIC_CHATTER)]


def test_uvicorn_log_level_debug_adds_a_line_per_revision(project: Path, tmp_path: Path) -> None:
    write_migrations(project, 3)
    write_app(project)
    _, lines = serve_once(project, f"sqlite:///{tmp_path / 'app.sqlite'}", "--log-level", "debug")
    per_revision = [line for line in lines if "applied revision" in line]
    assert [line.split()[3] for line in per_revision] == ["r1", "r2", "r3"]
    assert all(re.match(r"^DEBUG: +applied revision r\d in \d+\.\d{3}s$", x) for x in per_revision)
    assert sum(bool(SUMMARY.match(line)) for line in lines) == 1


def test_records_and_app_state(
    project: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 3)
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    app = FastAPI(lifespan=migrate_on_startup(database_url=url))
    with caplog.at_level(logging.DEBUG, logger="fastapi_migrate"), TestClient(app):
        result = app.state.migration
    assert isinstance(result, MigrationResult)
    assert (result.action, result.from_revision, result.to_revision) == ("upgraded", None, "r3")
    assert result.applied == ["r1", "r2", "r3"] and result.seconds > 0
    ours = [r for r in caplog.records if r.name == "fastapi_migrate"]
    infos = [r.getMessage() for r in ours if r.levelno >= logging.INFO]
    assert infos == [result.summary()]
    per_revision = [r.getMessage() for r in ours if r.getMessage().startswith("applied revision")]
    assert [m.split()[2] for m in per_revision] == ["r1", "r2", "r3"]
    assert all(r.levelno == logging.DEBUG for r in ours if r.getMessage() in per_revision)

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="fastapi_migrate"):
        again = migrate(MigrateSettings(database_url=url))
    assert [
        r.getMessage()
        for r in caplog.records
        if r.name == "fastapi_migrate" and r.levelno >= logging.INFO
    ] == [again.summary()]
    assert again.summary().startswith("migration noop: from r3 to r3, applied 0 [-] in ")
