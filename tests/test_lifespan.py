"""``migrate_on_startup``: in a running app (TestClient) and under a real uvicorn process."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx2
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from fastapi_migrate import (
    MigrationResult,
    UnversionedDatabase,
    migrate_on_startup,
)

from .support import (
    ONLINE_ONLY,
    add_revision,
    current_revisions,
    execute,
    refused_port,
    start_uvicorn,
    stop,
    subprocess_env,
    table_names,
    to_async,
    write_migrations,
)


def test_app_lifespan_runs_after_the_migration_and_its_state_reaches_requests(
    project: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    write_migrations(project, 2)
    seen: list[object] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        seen.append(table_names(url))
        yield {"greeting": "hello"}
        seen.append("closed")

    app = FastAPI(lifespan=migrate_on_startup(own, database_url=url))

    @app.get("/state")
    def state(request: Request) -> dict[str, Any]:
        result: MigrationResult = request.app.state.migration
        return {"greeting": request.state.greeting, "action": result.action}

    with TestClient(app) as client:
        assert client.get("/state").json() == {"greeting": "hello", "action": "upgraded"}
        assert app.state.migration.applied == ["r1", "r2"]
    assert seen == [{"t1", "t2", "alembic_version"}, "closed"]

    with TestClient(app) as client:  # a restart: nothing to do
        assert client.get("/state").json() == {"greeting": "hello", "action": "noop"}


@pytest.mark.parametrize("env", ["fastapi", "async"])
def test_async_env_runs_in_a_worker_thread_of_a_running_app(
    project: Path, database_url: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = write_migrations(project, 1, env=env)
    threads = project / "threads.txt"
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=ONLINE_ONLY
        + (
            "import pathlib, threading\n"
            f"pathlib.Path({str(threads)!r}).write_text(str(threading.get_ident()))\n"
            "op.create_table('t2', sa.Column('id', sa.Integer, primary_key=True))"
        ),
    )
    monkeypatch.setenv("DATABASE_URL", to_async(database_url))
    loop_thread: list[int] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        loop_thread.append(threading.get_ident())
        yield

    app = FastAPI(lifespan=migrate_on_startup(own))
    with TestClient(app):
        assert app.state.migration.action == "upgraded"
    assert current_revisions(database_url) == {"r2"}
    assert int(threads.read_text()) != loop_thread[0]


def test_on_a_sqlite_file_revisions_still_run_in_a_worker_thread(
    project: Path, tmp_path: Path
) -> None:
    """The no-op check on a SQLite file spares the worker thread; a start that migrates still
    runs every revision in a worker thread, after that check (an ``env.py`` may call
    ``asyncio.run()``, which cannot run in the server's loop)."""
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    location = write_migrations(project, 1)
    threads = project / "threads.txt"

    def recording(revision: str, down: str) -> None:
        add_revision(
            location,
            revision,
            down,
            upgrade=ONLINE_ONLY
            + (
                "import pathlib, threading\n"
                f"with pathlib.Path({str(threads)!r}).open('a') as log:\n"
                "    log.write(f'{threading.get_ident()}\\n')\n"
                f"op.create_table('t_{revision}', sa.Column('id', sa.Integer, primary_key=True))"
            ),
        )

    recording("r2", "r1")
    loop_threads: list[int] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        loop_threads.append(threading.get_ident())
        yield

    app = FastAPI(lifespan=migrate_on_startup(own, database_url=url))
    for expected in ("upgraded", "noop", "noop"):
        with TestClient(app):
            assert app.state.migration.action == expected
    recording("r3", "r2")
    with TestClient(app):
        assert (app.state.migration.action, app.state.migration.applied) == ("upgraded", ["r3"])
    # Each TestClient runs the app in a new thread, whose id may be an earlier one's: compare
    # each migrating start's revision thread with that start's own loop thread.
    ran_in = [int(line) for line in threads.read_text().split()]
    assert len(ran_in) == 2 and len(loop_threads) == 4
    assert ran_in[0] != loop_threads[0] and ran_in[1] != loop_threads[3]
    assert current_revisions(url) == {"r3"}
    assert {"t_r2", "t_r3"} <= table_names(url)


def _started_with_a_ticker(app: FastAPI) -> tuple[str, float]:
    """Enter and leave the app's lifespan on a new event loop with a task that ticks every
    10 ms beside it: the action, and the longest the loop went without a tick."""

    async def main() -> tuple[str, float]:
        gaps = [0.0]
        running = True

        async def ticker() -> None:
            last = time.monotonic()
            while running:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        async with app.router.lifespan_context(app):
            action = str(app.state.migration.action)
        running = False
        await task
        return action, max(gaps)

    return asyncio.run(main())


def test_a_sqlite_noop_needs_no_worker_thread_and_never_stalls_the_loop(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The no-op check of a SQLite file runs in the event loop (no worker thread: the first
    costs about a millisecond), but never waits there: a file another process holds locked,
    or heads not in the cache, send the start to a worker thread, and the loop keeps serving."""
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    location = write_migrations(project, 2)
    hops: list[object] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real_run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    app = FastAPI(lifespan=migrate_on_startup(database_url=url))
    assert _started_with_a_ticker(app)[0] == "upgraded" and len(hops) == 1
    past = time.time() - 3600  # files and folder from an earlier deploy: the cache is written
    for path in [location / "versions", *(location / "versions").glob("*.py")]:
        os.utime(path, (past, past))
    assert _started_with_a_ticker(app)[0] == "noop" and len(hops) == 2  # a cache miss
    assert _started_with_a_ticker(app)[0] == "noop" and len(hops) == 2  # in the event loop

    # Another process holds the file: the check gives up at once and a worker thread waits.
    locked = threading.Event()

    def hold_the_file() -> None:
        holder = sqlite3.connect(tmp_path / "app.sqlite")
        holder.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(3)
        holder.rollback()
        holder.close()

    holding = threading.Thread(target=hold_the_file)
    holding.start()
    locked.wait(10)
    action, longest_stall = _started_with_a_ticker(app)
    holding.join()
    assert action == "noop" and len(hops) == 3
    assert longest_stall < 1.5, f"the event loop stalled {longest_stall:.1f}s"


def test_a_failed_migration_fails_startup_and_the_app_lifespan_never_runs(
    project: Path, database_url: str
) -> None:
    write_migrations(project, 1)
    execute(database_url, "CREATE TABLE legacy (id INTEGER PRIMARY KEY)")
    entered: list[bool] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        entered.append(True)
        yield

    app = FastAPI(lifespan=migrate_on_startup(own, database_url=database_url))
    with pytest.raises(UnversionedDatabase), TestClient(app):
        pass
    assert entered == []
    assert not hasattr(app.state, "migration")
    assert table_names(database_url) == {"legacy"}


APP = """\
from fastapi import FastAPI
from fastapi_migrate import migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())


@app.get("/")
def root() -> dict[str, bool]:
    return {"ok": True}
"""


def test_uvicorn_exits_non_zero_serves_nothing_and_hides_the_password(project: Path) -> None:
    write_migrations(project, 1)
    (project / "main.py").write_text(APP)
    password = f"s3cret-{uuid.uuid4().hex[:6]}"
    url = f"postgresql+psycopg://app:{password}@127.0.0.1:{refused_port()}/x"
    env = subprocess_env(DATABASE_URL=url, MIGRATE_CONNECT_TIMEOUT="1")
    proc, port = start_uvicorn("main:app", project, env)
    answered = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            answered.append(httpx2.get(f"http://127.0.0.1:{port}/", timeout=1).status_code)
        except httpx2.TransportError:
            time.sleep(0.1)
    try:
        returncode = proc.wait(timeout=5)
    finally:
        output = stop(proc)  # kills it if it is still running; closes its pipe

    assert returncode != 0
    assert answered == []
    assert output.count("migration failed, the app will not start") == 1, output
    assert "DatabaseUnavailable" in output
    assert "cannot connect to postgresql+psycopg://app:***@127.0.0.1" in output
    assert "Application startup failed" in output
    assert password not in output


LOGGING_INI = """\
[alembic]
script_location = %(here)s/migrations

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

FILECONFIG_ENV = """\
from logging.config import fileConfig
from pathlib import Path

from fastapi_migrate.alembic_env import run_migrations

# Unconditionally, with disable_existing_loggers=True: every logger made before goes silent.
fileConfig(Path(__file__).resolve().parents[1] / "alembic.ini")
run_migrations()
"""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_app_logging_survives_an_env_py_that_calls_fileconfig(
    project: Path, tmp_path: Path
) -> None:
    location = write_migrations(project, 1)
    (location / "env.py").write_text(FILECONFIG_ENV)
    (project / "alembic.ini").write_text(LOGGING_INI)
    logger = logging.getLogger(f"myapp.{uuid.uuid4().hex[:6]}")
    logger.setLevel(logging.INFO)
    collect = _Collect()
    logger.addHandler(collect)
    root_handlers = list(logging.getLogger().handlers)
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"

    app = FastAPI(lifespan=migrate_on_startup(database_url=url))
    try:
        with TestClient(app):
            assert app.state.migration.applied == ["r1"]
            assert logger.disabled is False
            logger.info("still here")
    finally:
        logger.removeHandler(collect)
    assert collect.messages == ["still here"]
    assert logging.getLogger().handlers == root_handlers
