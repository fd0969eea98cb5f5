"""A long migration is visible while it runs: each revision's start line is printed while it
still runs, its end line with its duration, a line every PROGRESS_SECONDS while it runs, and a
process waiting for the migration lock says how long it waited and who holds it.

The long revision runs until the test creates a flag file, so the test decides when it ends
(no timing assumption); the periodic lines use a shorter PROGRESS_SECONDS, set in the child
processes by a ``sitecustomize`` (a shorter clock: the database and processes are real).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .production_helpers import write_app
from .progress_helpers import Output, add_waiting_revision, short_progress, summary_line
from .support import current_revisions, start_uvicorn, subprocess_env, wait_http, write_migrations

CLI = [sys.executable, "-m", "fastapi_migrate", "upgrade"]


def start(project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        CLI, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_cli_prints_each_revision_while_it_runs_and_a_waiter_says_who_holds_the_lock(
    project: Path, database_url: str, backend: str, tmp_path: Path
) -> None:
    location = write_migrations(project, 1)
    flag = tmp_path / "flag"
    add_waiting_revision(location, "r2", "r1", flag)
    env = subprocess_env(DATABASE_URL=database_url, PYTHONPATH=short_progress(tmp_path, 0.3))

    with Output(start(project, env)) as first:
        assert re.fullmatch(r"applied 1/2 r1 in \d+\.\d\ds", first.wait_for("applied 1/2 r1"))
        assert first.wait_for("applying 2/2") == "applying 2/2 r2 (wait for flag)"
        assert first.proc.poll() is None  # printed while r2 still runs
        still = first.wait_for("still applying")
        assert re.fullmatch(r"still applying 2/2 r2 \(wait for flag\): \d+s so far", still)

        with Output(start(project, env)) as second:
            waiting = second.wait_for("waiting for the migration lock: ")
            assert re.match(r"waiting for the migration lock: \d+s so far", waiting), waiting
            holder = {
                "sqlite": "(lock file ",
                "postgresql": "; held by PostgreSQL backend pid ",
                "mariadb": "; held by connection ",
            }[backend]
            assert holder in waiting, waiting
            flag.touch()  # r2 ends
            assert first.finish() == 0, first.text()
            assert second.finish() == 0, second.text()

    assert re.search(r"^applied 2/2 r2 \(wait for flag\) in \d+\.\d\ds$", first.text(), re.M)
    assert summary_line(first.text()).startswith("migration upgraded: from base to r2")
    assert summary_line(second.text()).startswith("migration noop: from r2 to r2")
    assert current_revisions(database_url) == {"r2"}


def test_cli_prints_no_progress_line_on_a_noop(project: Path, tmp_path: Path) -> None:
    write_migrations(project, 2)
    env = subprocess_env(DATABASE_URL=f"sqlite:///{tmp_path / 'app.sqlite'}")
    subprocess.run(CLI, cwd=project, env=env, check=True, capture_output=True, timeout=60)
    again = subprocess.run(CLI, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert again.stdout.splitlines() == [again.stdout.strip()]  # the summary alone
    assert again.stdout.startswith("migration noop: from r2 to r2")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_app_log_shows_the_revision_running_before_the_app_serves(
    project: Path, database_url: str, tmp_path: Path
) -> None:
    location = write_migrations(project, 1)
    flag = tmp_path / "flag"
    add_waiting_revision(location, "r2", "r1", flag)
    write_app(project)
    env = subprocess_env(DATABASE_URL=database_url, PYTHONPATH=short_progress(tmp_path, 0.3))
    proc, port = start_uvicorn("app:app", project, env)
    with Output(proc) as log:  # the server is stopped at the end of the block
        assert log.wait_for("applying 2/2").endswith("applying 2/2 r2 (wait for flag)")
        assert "still applying 2/2 r2 (wait for flag): " in log.wait_for("still applying")
        assert proc.poll() is None  # still starting: the lifespan has not finished
        flag.touch()
        ended = log.wait_for("applied 2/2 r2")
        assert re.search(r"applied 2/2 r2 \(wait for flag\) in \d+\.\d\ds$", ended), ended
        log.wait_for("Application startup complete")
        assert wait_http(port, "/migration", proc) == 200
    assert current_revisions(database_url) == {"r2"}
