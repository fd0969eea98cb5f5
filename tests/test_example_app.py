"""The example app, started as a user would: uvicorn, an async driver, httpx."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .support import (
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
        created = httpx.post(
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
        notes = httpx.get(f"http://127.0.0.1:{port}/notes").json()
    finally:
        stop(proc)
    assert notes == [{"id": 1, "author": "ada", "title": "first", "body": "", "pinned": True}]
