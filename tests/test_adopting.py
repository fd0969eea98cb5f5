"""Adopting the plugin in a FastAPI project as it is (issue 23): its tests start the app with
``TestClient(app)``, whose ``migrate_on_startup()`` lifespan must work on the test's database;
async tests under pytest-asyncio (strict, auto) and anyio, both installed; the health router
under an app whose operation ids read ``route.tags[0]``. Each runs a real inner pytest on a
user's project, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from .plugin_helpers import PLUGIN, SERVERS
from .support import to_async

pytest_plugins = ["pytester", "tests.plugin_fixtures"]

# Two ways an app names its database: DATABASE_URL (read by migrate_on_startup itself), and
# its own settings object handed over once. Both point somewhere a test must never touch.
APP_FROM_ENVIRONMENT = """\
from fastapi import FastAPI

from fastapi_migrate import health_router, migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())
app.include_router(health_router)
"""

APP_WITH_ITS_SETTINGS = """\
from fastapi import FastAPI
from pydantic_settings import BaseSettings

from fastapi_migrate import health_router, migrate_on_startup


class Settings(BaseSettings):
    APP_DATABASE_URI: str = "postgresql+psycopg://nobody@127.0.0.1:1/never_used"


settings = Settings()
app = FastAPI(lifespan=migrate_on_startup(database_url=str(settings.APP_DATABASE_URI)))
app.include_router(health_router)
"""

# No code about the database in any test: TestClient runs the lifespan, as in any FastAPI suite.
LIFESPAN_TESTS = """\
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import app_env
import app_settings

from fastapi_migrate import MigrationError

APPS = [app_env.app, app_settings.app]


def started_on(app, url):
    with TestClient(app) as client:
        assert app.state.migration.action == "noop", app.state.migration
        used = app.state.migration_settings.database_url
        assert sa.make_url(used).database == sa.make_url(str(url)).database
        health = client.get("/health/migrations")
        assert health.status_code == 200, health.text
        assert health.json()["current"] == "r4"


@pytest.mark.parametrize("app", APPS)
def test_database_url(migrated_database_url, app):
    started_on(app, migrated_database_url)


@pytest.mark.parametrize("app", APPS)
def test_engine(migrated_engine, app):
    started_on(app, migrated_engine.url)


@pytest.mark.parametrize("app", APPS)
def test_rolled_back_connection(migrated_connection, app):
    started_on(app, migrated_connection.engine.url)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("app", APPS)
async def test_async_connection(migrated_async_connection, app):
    started_on(app, migrated_async_connection.engine.url)


@pytest.mark.parametrize("app", APPS)
def test_no_fixture_is_unchanged(app, monkeypatch):
    monkeypatch.setenv("MIGRATE_CONNECT_TIMEOUT", "0")
    # The app's own URL, as before: the unreachable server, or Alembic's placeholder.
    with pytest.raises(MigrationError, match="127.0.0.1:1|driver"):
        with TestClient(app):
            pass
"""


def _server(backend: str, *, asyncio: bool) -> list[str]:
    if backend == "sqlite":
        return ["--migrate-db-url", "sqlite+aiosqlite://"] if asyncio else []
    from .conftest import require_backend

    require_backend(backend)
    return ["--migrate-db-url", to_async(SERVERS[backend]) if asyncio else SERVERS[backend]]


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The inner pytest with both async plugins loaded, as a project that has both installed
    (and sets the loop scope that pytest-asyncio otherwise warns about, an error under -W)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        return pytester.runpytest_subprocess(
            "-p", "anyio.pytest_plugin", "-p", "pytest_asyncio.plugin", "-p", PLUGIN,
            "-o", "asyncio_default_fixture_loop_scope=function",
            "-p", "no:cacheprovider", "-W", "error", *args,
        )  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
@pytest.mark.parametrize("url_from", ["DATABASE_URL", "placeholder"])
def test_the_apps_lifespan_works_on_the_tests_database(
    pytester: pytest.Pytester,
    user_project: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    url_from: str,
) -> None:
    """DATABASE_URL (or the app's own setting) names an unreachable server: a lifespan that
    touched it would fail; with Alembic's placeholder URL and no DATABASE_URL, the start would
    fail on "driver://". Inside a test that uses a fixture, it starts on the test's database."""
    if url_from == "placeholder":
        monkeypatch.delenv("DATABASE_URL")
        ini = user_project / "alembic.ini"
        ini.write_text(
            ini.read_text().replace(
                "sqlite:///never-used.db", "driver://user:pass@localhost/dbname"
            )
        )
    else:
        monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/never_used")
    monkeypatch.setenv("MIGRATE_CONNECT_TIMEOUT", "2")  # fail fast where the fix is missing
    pytester.makepyfile(
        app_env=APP_FROM_ENVIRONMENT, app_settings=APP_WITH_ITS_SETTINGS, test_app=LIFESPAN_TESTS
    )
    sync = _run(pytester, "-k", "not async_connection", *_server(backend, asyncio=False))
    sync.assert_outcomes(passed=8)
    asynchronous = _run(pytester, "-k", "async_connection", *_server(backend, asyncio=True))
    asynchronous.assert_outcomes(passed=2)


# Async tests both ways, with both plugins installed: anyio-marked and asyncio-marked tests
# share one file, as a project moving from one to the other has them.
ASYNC_TESTS = """\
import pytest
import sqlalchemy as sa


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def names(c):
    return (await c.execute(sa.text("SELECT name FROM t2 ORDER BY name"))).scalars().all()


async def rolled_back_each_time(c):
    assert await names(c) == []
    await c.execute(sa.text("INSERT INTO t2 (name) VALUES ('x')"))
    assert await names(c) == ["x"]


@pytest.mark.anyio
@pytest.mark.parametrize("k", range(2))
async def test_on_anyio(migrated_async_connection, k):
    await rolled_back_each_time(migrated_async_connection)


@pytest.mark.asyncio
@pytest.mark.parametrize("k", range(2))
async def test_on_pytest_asyncio(migrated_async_connection, k):
    await rolled_back_each_time(migrated_async_connection)


@pytest.mark.asyncio(loop_scope="module")
async def test_on_a_module_loop(migrated_async_connection):
    await rolled_back_each_time(migrated_async_connection)
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_async_fixture_under_pytest_asyncio_and_anyio(
    pytester: pytest.Pytester, user_project: Path, backend: str, mode: str
) -> None:
    pytester.makepyfile(test_async=ASYNC_TESTS)
    result = _run(pytester, "-o", f"asyncio_mode={mode}", *_server(backend, asyncio=True))
    result.assert_outcomes(passed=5)


def test_async_fixture_in_a_sync_test_says_what_to_do(
    pytester: pytest.Pytester, user_project: Path
) -> None:
    pytester.makepyfile(
        test_sync="def test_sync(migrated_async_connection):\n    pass\n",
    )
    result = _run(pytester, *_server("sqlite", asyncio=True))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*nothing runs test_sync on an event loop*@pytest.mark.anyio*"])


# The full-stack FastAPI template names operations after their first tag.
TAGGED_APP = """\
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from fastapi_migrate import health_router, migrate_on_startup


def first_tag_and_name(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}"


app = FastAPI(lifespan=migrate_on_startup(), generate_unique_id_function=first_tag_and_name)
app.include_router(health_router)


def test_health_and_schema(migrated_database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    with TestClient(app) as client:
        assert client.get("/health/migrations").status_code == 200
        assert client.get("/openapi.json").status_code == 200
"""


def test_health_router_under_an_app_that_names_operations_by_tag(
    pytester: pytest.Pytester, user_project: Path
) -> None:
    pytester.makepyfile(test_tagged=TAGGED_APP)
    result = _run(pytester)
    result.assert_outcomes(passed=1)


# The full-stack FastAPI template's shape: a session-scoped autouse ``db`` fixture that seeds a
# first user once and commits, a module-scoped TestClient, an engine of the app's own.
SESSION_CONFTEST = """\
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app_settings import app


@pytest.fixture(scope="session", autouse=True)
def db(migrated_session_database_url):
    engine = sa.create_engine(migrated_session_database_url)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO t2 (name) VALUES ('first superuser')"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def client():
    with TestClient(app) as c:
        yield c
"""

SESSION_TESTS = """\
import sqlalchemy as sa

from app_settings import app


def names(db):
    with db.connect() as c:
        return list(c.execute(sa.text("SELECT name FROM t2 ORDER BY id")).scalars())


def test_the_lifespan_is_on_the_session_database(client, db):
    assert app.state.migration.action == "noop"
    assert sa.make_url(app.state.migration_settings.database_url).database == db.url.database
    assert client.get("/health/migrations").json()["current"] == "r4"


def test_writes_stay_for_the_session(db):
    assert names(db) == ["first superuser"]
    with db.begin() as c:
        c.execute(sa.text("INSERT INTO t2 (name) VALUES ('kept')"))


def test_after(db):
    assert names(db) == ["first superuser", "kept"]
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_session_scoped_database_for_session_and_module_fixtures(
    pytester: pytest.Pytester, user_project: Path, backend: str
) -> None:
    pytester.makepyfile(
        app_settings=APP_WITH_ITS_SETTINGS, conftest=SESSION_CONFTEST, test_session=SESSION_TESTS
    )
    result = _run(pytester, *_server(backend, asyncio=False))
    result.assert_outcomes(passed=3)


KEEP_FAILED_TESTS = """\
import sqlalchemy as sa


def test_passes(migrated_engine):
    with migrated_engine.begin() as c:
        c.execute(sa.text("INSERT INTO t2 (name) VALUES ('passed')"))


def test_fails(migrated_engine):
    with migrated_engine.begin() as c:
        c.execute(sa.text("INSERT INTO t2 (name) VALUES ('left by the failed test')"))
    assert False, "on purpose"
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_keep_failed_keeps_a_failed_tests_database_and_prints_its_url_masked(
    pytester: pytest.Pytester, user_project: Path, backend: str
) -> None:
    import sqlalchemy as sa

    server = _server(backend, asyncio=False)
    secret = backend == "postgresql"  # its trust authentication ignores the password
    if secret:
        with_password = sa.make_url(server[1]).set(password="s3cret")
        server = ["--migrate-db-url", with_password.render_as_string(hide_password=False)]
    pytester.makepyfile(test_keep=KEEP_FAILED_TESTS)
    args = ["-p", "xdist.plugin", "-p", "anyio.pytest_plugin", "-p", PLUGIN, *server]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        result = pytester.runpytest_subprocess(*args, "--migrate-keep-failed")
        result.assert_outcomes(passed=1, failed=1)
        assert "s3cret" not in result.stdout.str() + result.stderr.str()
        lines = [line for line in result.stdout.lines if line.startswith("test_keep.py::")]
        assert len(lines) == 1 and lines[0].startswith("test_keep.py::test_fails: "), lines
        url = lines[0].split(": ", 1)[1]
        assert not secret or "***" in url
        kept = sa.make_url(url).set(password="s3cret") if secret else sa.make_url(url)
        # A later run (its cleanup of leftovers included) leaves it alone.
        pytester.runpytest_subprocess(*args, "-k", "passes").assert_outcomes(passed=1)
    engine = sa.create_engine(kept, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT name FROM t2")).scalars().all()
        assert rows == ["left by the failed test"]
    finally:
        engine.dispose()
        if backend != "sqlite":
            from fastapi_migrate.testing.janitor import database_server

            found = database_server(server[1], user_project)
            try:
                found.drop(str(kept.database))
            finally:
                found.close()
