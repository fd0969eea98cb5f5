"""The README's release-job recipe on the example app: replicas in wait mode, a job migrates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from .production_helpers import Output, assert_not_serving
from .support import (
    current_revisions,
    start_uvicorn,
    subprocess_env,
    to_async,
    wait_http,
)

REPO = Path(__file__).resolve().parents[1]
# What example_app/Dockerfile sets for the CLI.
IMAGE_ENV = {
    "MIGRATE_SCRIPT_LOCATION": "example_app/migrations",
    "MIGRATE_METADATA": "example_app.models:Base.metadata",
}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_release_job_migrates_while_the_app_waits(database_url: str) -> None:
    app_env = subprocess_env(DATABASE_URL=to_async(database_url), MIGRATE_MODE="wait", **IMAGE_ENV)
    proc, port = start_uvicorn("example_app.main:app", REPO, app_env)
    output = Output(proc)
    try:
        output.wait_for("MIGRATE_MODE=wait")
        assert_not_serving(port, proc, seconds=1)
        assert current_revisions(database_url) == set()

        job = subprocess.run(
            [sys.executable, "-m", "fastapi_migrate", "upgrade"],
            cwd=REPO,
            env=subprocess_env(DATABASE_URL=to_async(database_url), **IMAGE_ENV),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert job.returncode == 0, job.stderr
        assert "migration upgraded: from base to 0003" in job.stdout + job.stderr

        assert wait_http(port, "/health/migrations", proc, timeout=15) == 200
        created = httpx2.post(
            f"http://127.0.0.1:{port}/notes", json={"author": "ada", "title": "first"}
        )
        assert created.status_code == 201
    finally:
        printed = output.stop()
    assert "migration waited: from base to 0003" in printed
