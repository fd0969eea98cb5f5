"""The pytest plugin, run as a user's project runs it: a real inner pytest (``pytester``) on a
project with migrations, on SQLite, PostgreSQL and MariaDB, under pytest-xdist."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate.backends.base import DatabaseServer
from fastapi_migrate.backends.sqlite import SqliteServer
from fastapi_migrate.testing.janitor import Janitor, database_server, host_tag, is_stale
from fastapi_migrate.testing.pool import is_slot

from .conftest import require_backend
from .plugin_helpers import PLUGIN, SERVERS, pooled_databases, run_inner
from .support import PG_SERVER, add_revision

pytest_plugins = ["pytester", "tests.plugin_fixtures"]

# Each test writes a row and expects the tables as the migrations left them (on a server, the
# database an earlier test used, reset); one fails on purpose (its database must be dropped or
# reset all the same). Every database used is recorded.
USER_TESTS = """\
import pytest
import sqlalchemy as sa


@pytest.fixture(autouse=True)
def record(migrated_database_url, migrated_template):
    with open("used.txt", "a") as f:
        f.write(f"{migrated_database_url}\\n{migrated_template.url}\\n")


@pytest.mark.parametrize("k", range(6))
def test_fresh_database_at_head(migrated_engine, k):
    with migrated_engine.begin() as c:
        assert c.execute(sa.text("SELECT count(*) FROM t2")).scalar() == 0
        c.execute(sa.text("INSERT INTO t2 (name) VALUES ('mine')"))
        assert c.execute(sa.text("SELECT name FROM t1")).scalars().all() == ["seed"]
        assert c.execute(sa.text("SELECT version_num FROM fm_versions")).scalars().all() == ["r4"]
    inspector = sa.inspect(migrated_engine)
    fks = inspector.get_foreign_keys("child")
    assert [(fk["referred_table"], fk["constrained_columns"]) for fk in fks] == [
        ("t1", ["parent_id"])
    ]
    indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("child")}
    assert indexes["ix_child_name"] == ["name"]


def test_failing_on_purpose(migrated_engine):
    with migrated_engine.begin() as c:
        c.execute(sa.text("INSERT INTO t2 (name) VALUES ('mine')"))
    assert False, "fails on purpose"
"""


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseServer]:
    backend: str = request.param
    if backend == "sqlite":  # the inner project's pytest cache folder, as the plugin's
        root = request.getfixturevalue("pytester").path
        found: DatabaseServer = SqliteServer(root / ".pytest_cache" / "d" / "fastapi-migrate")
    else:
        require_backend(backend)
        found = database_server(SERVERS[backend], tmp_path)
    try:
        yield found
    finally:
        found.close()


def _used(root: Path) -> tuple[set[str], set[str]]:
    """Database names of the copies and of the templates the inner run recorded."""
    names = [sa.make_url(u).database or "" for u in (root / "used.txt").read_text().split()]
    templates = {Path(n).stem for n in names if Path(n).stem.startswith("fmpt_tpl_")}
    templates = {n for n in templates if not is_slot(n)}  # pooled databases are copies
    return {Path(n).stem for n in names} - templates, templates


def _assert_all_gone(root: Path, server: DatabaseServer | None, copies: set[str]) -> None:
    if server is None:
        assert len(copies) == 7  # one file per test, none shared
    else:  # reset after each test and lent again: at most two per worker take turns
        assert 1 <= len(copies) <= 4
    if server is None:
        left = {p.stem for p in root.rglob("fmpt_*.sqlite")}
        pooled = {n for n in left if is_slot(n)}  # fresh copies for the next run
        assert left - pooled == _used(root)[1]  # and the template, kept for the next run
        files = SqliteServer(root / ".pytest_cache" / "d" / "fastapi-migrate")
        assert pooled and all(files.sealed(n) for n in pooled)  # untouched since copied
    else:  # the copies stay in the template's warm pool for the next run, the others go
        left = set(server.names())
        assert {c for c in copies if c in left} <= {c for c in copies if is_slot(c)}
        assert _used(root)[1] <= left  # the template: kept for the next run


def test_sqlite_by_default_under_xdist(pytester: pytest.Pytester, user_project: Path) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = run_inner(pytester, "-n", "2")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*fails on purpose*"])
    copies, templates = _used(user_project)
    assert len(templates) == 1  # one for both workers
    _assert_all_gone(user_project, None, copies)
    assert not (user_project / "never-used.db").exists()


@pytest.mark.parametrize("server", ["postgresql", "mariadb"], indirect=True)
def test_server_from_option_under_xdist(
    pytester: pytest.Pytester, user_project: Path, server: DatabaseServer
) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    url = server.url("test")  # what a user passes: a URL on the server (its database unused)
    result = run_inner(pytester, "-n", "2", "--migrate-db-url", url)
    result.assert_outcomes(passed=6, failed=1)
    copies, templates = _used(user_project)
    assert len(templates) == 1
    _assert_all_gone(user_project, server, copies)


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)
def test_server_from_environment_variable_with_an_async_driver(
    pytester: pytest.Pytester,
    user_project: Path,
    server: DatabaseServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    async_url = sa.make_url(server.url("test")).set(drivername="postgresql+asyncpg")
    monkeypatch.setenv("MIGRATE_TEST_DATABASE_URL", async_url.render_as_string(False))
    result = pytester.runpytest_subprocess()  # the plugin loaded by its entry point
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["fastapi-migrate: test databases on postgresql+asyncpg://*"])
    used = (user_project / "used.txt").read_text().split()
    assert {sa.make_url(u).drivername for u in used} == {"postgresql+asyncpg"}
    copies, _ = _used(user_project)
    _assert_all_gone(user_project, server, copies)


APP = """\
import os
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI

from fastapi_migrate import migrate_on_startup


@asynccontextmanager
async def lifespan(app):
    app.state.engine = sa.create_engine(os.environ["DATABASE_URL"])  # read at startup
    yield
    app.state.engine.dispose()


app = FastAPI(lifespan=migrate_on_startup(lifespan))


@app.post("/items/{name}", status_code=201)
def add(name: str) -> None:
    with app.state.engine.begin() as c:
        c.execute(sa.text("INSERT INTO t2 (name) VALUES (:n)"), {"n": name})


@app.get("/items")
def items() -> list[str]:
    with app.state.engine.connect() as c:
        return list(c.execute(sa.text("SELECT name FROM t2 ORDER BY id")).scalars())
"""

# The README's recipe (example_app/tests/conftest.py), for a sync app.
APP_CONFTEST = """\
import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def client(migrated_database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.delenv("MIGRATE_DATABASE_URL", raising=False)
    from app import app

    with TestClient(app) as client:
        assert app.state.migration.action == "noop"  # the copy is at head already
        yield client
"""

APP_TESTS = """\
import pytest


@pytest.mark.parametrize("name", ["ada", "grace", "linus"])
def test_each_test_sees_only_its_rows(client, name):
    assert client.get("/items").json() == []
    assert client.post(f"/items/{name}").status_code == 201
    assert client.get("/items").json() == [name]
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_app_recipe_starts_on_the_test_database_and_migrates_nothing(
    pytester: pytest.Pytester, user_project: Path, backend: str
) -> None:
    pytester.makepyfile(app=APP, conftest=APP_CONFTEST, test_app=APP_TESTS)
    args = []  # the plugin loaded by its entry point, as in a user's project
    if backend != "sqlite":
        require_backend(backend)
        args += ["--migrate-db-url", SERVERS[backend]]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)
def test_failing_migrations_error_every_test_and_leave_nothing(
    pytester: pytest.Pytester, user_project: Path, server: DatabaseServer
) -> None:
    add_revision(
        user_project / "db" / "migrations", "r5", "r4", upgrade="raise RuntimeError('broken r5')"
    )
    pytester.makepyfile(test_user=USER_TESTS)
    before = set(server.names())
    result = run_inner(pytester, "--migrate-db-url", PG_SERVER)
    result.assert_outcomes(errors=7)
    result.stdout.fnmatch_lines(["*MigrationFailed: revision r5 failed: RuntimeError: broken r5*"])
    assert [n for n in set(server.names()) - before if is_stale(n)] == []


# Leaves its database dirty (a row, a table gone) and dies mid-test, without any cleanup.
CRASHING_TEST = """\
import os

import sqlalchemy as sa


def test_killed(migrated_engine):
    with open("killed.txt", "w") as f:
        f.write(str(migrated_engine.url.database))
    with migrated_engine.begin() as c:
        c.execute(sa.text("INSERT INTO t2 (name) VALUES ('left by a killed run')"))
        c.execute(sa.text("DROP TABLE child"))
    os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("server", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_killed_run_leaves_nothing_dirty_for_the_next(
    pytester: pytest.Pytester, user_project: Path, server: DatabaseServer
) -> None:
    """A first run fills the warm pool; the second takes a pooled database, dirties it and is
    killed: the database stays in the pool, dirty. The third proves what it takes from the
    pool (reset, or dropped): its tests see the migrations' rows and tables."""
    args = [] if isinstance(server, SqliteServer) else ["--migrate-db-url", server.url("test")]
    pytester.makepyfile(test_user=USER_TESTS)
    run_inner(pytester, *args).assert_outcomes(passed=6, failed=1)
    (pytester.path / "test_user.py").unlink()
    pytester.makepyfile(test_crash=CRASHING_TEST)
    killed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", PLUGIN, *args],
        cwd=user_project,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    server_url = None if isinstance(server, SqliteServer) else server.url("test")
    dirty = Path((user_project / "killed.txt").read_text()).stem
    assert dirty in pooled_databases(user_project, server_url)  # left dirty in the pool

    # The next run, a real one: every test checks a fresh copy's rows and tables.
    (pytester.path / "test_crash.py").unlink()
    pytester.makepyfile(test_user=USER_TESTS)
    result = run_inner(pytester, *args)
    result.assert_outcomes(passed=6, failed=1)
    assert not [n for n in server.names() if is_stale(n)]  # nothing else left behind


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("server", ["postgresql", "mariadb"], indirect=True)
def test_leftovers_of_live_processes_and_other_hosts_are_kept(server: DatabaseServer) -> None:
    other = "000000" if host_tag() != "000000" else "111111"
    live = f"fmpt_{host_tag()}_{os.getppid()}_abcdef_main_tpl"
    other_host = f"fmpt_{other}_{_dead_pid()}_abcdef_main_tpl"
    for name in (live, other_host):
        server.create(name)
    try:
        Janitor(server)
        assert {live, other_host} <= set(server.names())
    finally:
        for name in (live, other_host):
            server.drop(name)
    assert {live, other_host}.isdisjoint(server.names())
