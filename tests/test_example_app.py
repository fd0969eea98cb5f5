"""The example app, started as a user would: uvicorn, an async driver, httpx2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from .conftest import require_backend
from .support import (
    PG_SERVER,
    current_revisions,
    start_uvicorn,
    stop,
    subprocess_env,
    table_names,
    to_async,
    wait_http,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_example_app_migrates_serves_and_keeps_rows_across_restarts(database_url: str) -> None:
    env = subprocess_env(DATABASE_URL=to_async(database_url))
    proc, port = start_uvicorn("example_app.main:app", REPO, env)
    try:
        assert wait_http(port, "/health/migrations", proc) == 200
        created = httpx2.post(
            f"http://127.0.0.1:{port}/notes",
            json={"author": "ada", "title": "first", "pinned": True},
        )
        assert created.status_code == 201
    finally:
        stop(proc)
    assert {"authors", "notes"} <= table_names(database_url)
    assert current_revisions(database_url) == {"0003"}

    proc, port = start_uvicorn("example_app.main:app", REPO, env)
    try:
        assert wait_http(port, "/health/migrations", proc) == 200
        notes = httpx2.get(f"http://127.0.0.1:{port}/notes").json()
    finally:
        stop(proc)
    assert notes == [{"id": 1, "author": "ada", "title": "first", "body": "", "pinned": True}]


def test_example_app_starts_on_its_own_sqlite_file_without_settings(tmp_path: Path) -> None:
    """The Quick start's first command: nothing set, a SQLite file in the working directory."""
    env = subprocess_env(PYTHONPATH=str(REPO))
    proc, port = start_uvicorn("example_app.main:app", tmp_path, env)
    try:
        assert wait_http(port, "/health/migrations", proc) == 200
        assert httpx2.get(f"http://127.0.0.1:{port}/notes").json() == []
    finally:
        log = stop(proc)
    database = f"sqlite:///{tmp_path / 'example.db'}"
    assert current_revisions(database) == {"0003"}
    assert "migration upgraded: from base to 0003, applied 3 [0001,0002,0003]" in log


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_example_app_test_suite_gets_a_migrated_database_per_test(backend: str) -> None:
    """``example_app/tests``: the README's recipe for testing an app, run as a user runs it."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"]
    if backend == "postgresql":
        require_backend(backend)
        args += ["--migrate-db-url", to_async(PG_SERVER)]
    run = subprocess.run(
        [*args, "example_app/tests"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout
