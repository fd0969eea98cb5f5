"""``migrated_connection`` / ``migrated_async_connection``: a real inner pytest on a project with
migrations, on SQLite, PostgreSQL and MariaDB. Each inner test checks that it starts on the
database as the migrations left it, whatever the test before it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import require_backend
from .plugin_helpers import SERVERS, run_inner
from .support import to_async

pytest_plugins = ["pytester", "tests.plugin_fixtures"]


def _server_args(backend: str, *, asyncio: bool = False) -> list[str]:
    if backend == "sqlite":
        return ["--migrate-db-url", "sqlite+aiosqlite://"] if asyncio else []
    require_backend(backend)
    return ["--migrate-db-url", to_async(SERVERS[backend]) if asyncio else SERVERS[backend]]


# Tests run in file order (no xdist): each "after" test checks what the one before left.
ROLLBACK_TESTS = """\
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session


def names(c):
    return c.execute(sa.text("SELECT name FROM t2 ORDER BY name")).scalars().all()


@pytest.fixture(autouse=True)
def starts_clean(migrated_connection):
    c = migrated_connection
    assert names(c) == []
    assert c.execute(sa.text("SELECT name FROM t1")).scalars().all() == ["seed"]
    assert c.execute(sa.text("SELECT version_num FROM fm_versions")).scalars().all() == ["r4"]
    assert not sa.inspect(c).has_table("extra")
    assert [col["name"] for col in sa.inspect(c).get_columns("t3")] == ["id", "name"]


@pytest.mark.parametrize("k", range(3))
def test_a_session_commits_freely(migrated_connection, k):
    with Session(bind=migrated_connection, join_transaction_mode="create_savepoint") as s:
        s.execute(sa.text("INSERT INTO t2 (name) VALUES ('kept')"))
        s.commit()
        s.execute(sa.text("INSERT INTO t2 (name) VALUES ('undone')"))
        s.rollback()
        assert names(s.connection()) == ["kept"]
    assert names(migrated_connection) == ["kept"]


def test_commits_the_connection_itself(migrated_connection):
    migrated_connection.execute(sa.text("INSERT INTO t2 (name) VALUES ('escaped')"))
    migrated_connection.commit()


def test_commits_as_text(migrated_connection):
    migrated_connection.execute(sa.text("INSERT INTO t2 (name) VALUES ('escaped')"))
    migrated_connection.exec_driver_sql("COMMIT")


def test_changes_the_schema(migrated_connection):
    migrated_connection.execute(sa.text("CREATE TABLE extra (id INTEGER)"))
    migrated_connection.execute(sa.text("ALTER TABLE t3 ADD COLUMN more INTEGER"))
    migrated_connection.execute(sa.text("INSERT INTO t2 (name) VALUES ('after ddl')"))


def test_fails(migrated_connection):
    migrated_connection.execute(sa.text("INSERT INTO t2 (name) VALUES ('failed')"))
    assert False, "fails on purpose"


def test_last(migrated_connection):
    pass
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_each_test_starts_at_head_whatever_the_last_one_did(
    pytester: pytest.Pytester, user_project: Path, backend: str
) -> None:
    pytester.makepyfile(test_rollback=ROLLBACK_TESTS)
    result = run_inner(pytester, *_server_args(backend))
    result.assert_outcomes(passed=7, failed=1)
    result.stdout.fnmatch_lines(["*fails on purpose*"])


def test_each_xdist_worker_has_its_own_database(
    pytester: pytest.Pytester, user_project: Path
) -> None:
    pytester.makepyfile(test_rollback=ROLLBACK_TESTS)
    result = run_inner(pytester, "-n", "2", *_server_args("postgresql"))
    result.assert_outcomes(passed=7, failed=1)


ASYNC_TESTS = """\
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def names(c):
    return (await c.execute(sa.text("SELECT name FROM t2 ORDER BY name"))).scalars().all()


@pytest.mark.parametrize("k", range(3))
async def test_a_session_commits_freely(migrated_async_connection, k):
    assert await names(migrated_async_connection) == []
    async with AsyncSession(
        bind=migrated_async_connection, join_transaction_mode="create_savepoint"
    ) as s:
        await s.execute(sa.text("INSERT INTO t2 (name) VALUES ('kept')"))
        await s.commit()
    assert await names(migrated_async_connection) == ["kept"]


async def test_commits_the_connection_itself(migrated_async_connection):
    assert await names(migrated_async_connection) == []
    await migrated_async_connection.execute(sa.text("INSERT INTO t2 (name) VALUES ('escaped')"))
    await migrated_async_connection.commit()


async def test_after_a_commit(migrated_async_connection):
    assert await names(migrated_async_connection) == []
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_async_connection(pytester: pytest.Pytester, user_project: Path, backend: str) -> None:
    pytester.makepyfile(test_async=ASYNC_TESTS)
    result = run_inner(pytester, *_server_args(backend, asyncio=True))
    result.assert_outcomes(passed=5)


def test_async_connection_on_a_sync_url_says_what_to_pass(
    pytester: pytest.Pytester, user_project: Path
) -> None:
    pytester.makepyfile(test_async=ASYNC_TESTS)
    result = run_inner(pytester, "-k", "after_a_commit")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*migrated_async_connection needs an asyncio driver*"])


# The README's recipe: the app's session dependency overridden with one bound to the test's
# connection; the app never opens a connection of its own.
SYNC_APP = """\
from collections.abc import Iterator

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.orm import Session

app = FastAPI()


def get_session() -> Iterator[Session]:
    raise RuntimeError("the real app opens its engine here")


@app.post("/items/{name}", status_code=201)
def add(name: str, session: Session = Depends(get_session)) -> None:
    session.execute(sa.text("INSERT INTO t2 (name) VALUES (:n)"), {"n": name})
    session.commit()


@app.get("/items")
def items(session: Session = Depends(get_session)) -> list[str]:
    return list(session.execute(sa.text("SELECT name FROM t2 ORDER BY id")).scalars())
"""

SYNC_CONFTEST = """\
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import app, get_session


@pytest.fixture
def client(migrated_connection):
    def session_on_the_test_connection():
        with Session(bind=migrated_connection, join_transaction_mode="create_savepoint") as s:
            yield s

    app.dependency_overrides[get_session] = session_on_the_test_connection
    with TestClient(app) as client:
        yield client
    app.dependency_overrides.clear()
"""

ASYNC_APP = """\
from collections.abc import AsyncIterator

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

app = FastAPI()


async def get_session() -> AsyncIterator[AsyncSession]:
    raise RuntimeError("the real app opens its engine here")
    yield


@app.post("/items/{name}", status_code=201)
async def add(name: str, session: AsyncSession = Depends(get_session)) -> None:
    await session.execute(sa.text("INSERT INTO t2 (name) VALUES (:n)"), {"n": name})
    await session.commit()


@app.get("/items")
async def items(session: AsyncSession = Depends(get_session)) -> list[str]:
    return list((await session.execute(sa.text("SELECT name FROM t2 ORDER BY id"))).scalars())
"""

ASYNC_CONFTEST = """\
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app import app, get_session


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def client(migrated_async_connection):
    async def session_on_the_test_connection():
        async with AsyncSession(
            bind=migrated_async_connection, join_transaction_mode="create_savepoint"
        ) as s:
            yield s

    app.dependency_overrides[get_session] = session_on_the_test_connection
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    app.dependency_overrides.clear()
"""

APP_TESTS = """\
import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["ada", "grace", "linus"])
async def test_each_test_sees_only_its_rows(client, name):
    response = client.get("/items")
    if hasattr(response, "__await__"):
        response, post = await response, await client.post(f"/items/{name}")
        after = await client.get("/items")
    else:
        post, after = client.post(f"/items/{name}"), client.get("/items")
    assert response.json() == []
    assert post.status_code == 201
    assert after.json() == [name]
"""


@pytest.mark.parametrize(
    ("backend", "flavour"),
    [("sqlite", "sync"), ("sqlite", "async"), ("postgresql", "sync"), ("postgresql", "async")],
)
def test_fastapi_recipe_with_a_dependency_override(
    pytester: pytest.Pytester, user_project: Path, backend: str, flavour: str
) -> None:
    asyncio = flavour == "async"
    pytester.makepyfile(
        app=ASYNC_APP if asyncio else SYNC_APP,
        conftest=(ASYNC_CONFTEST if asyncio else SYNC_CONFTEST)
        + ("" if asyncio else "\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"),
        test_app=APP_TESTS,
    )
    result = run_inner(pytester, "-p", "no:cacheprovider", *_server_args(backend, asyncio=asyncio))
    result.assert_outcomes(passed=3)
