"""An ``env.py`` that builds its engine from the app's own settings (``APP_DB_URL`` here, as
the full-stack FastAPI template reads its settings module) and ignores the URL and connection it
is given: every command, check, the lifespan and the plugin refuse before anything runs on that
other database, and an ``env.py`` that reaches the same database that way still works."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import MigrateSettings, migrate
from fastapi_migrate.foundation.errors import ConfigurationError
from fastapi_migrate.testing import (
    assert_downgrade_leaves_no_trace,
    assert_upgrade_downgrade_roundtrip,
)

from .cli_helpers import cli, fails, ok
from .plugin_helpers import PLUGIN, SERVERS
from .support import (
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    subprocess_env,
    table_names,
    to_async,
    write_migrations,
)

pytest_plugins = ["pytester"]

# The shape of the full-stack FastAPI template's env.py: its own engine, from its own settings.
OWN_ENGINE_ENV = """\
import os

from alembic import context
from sqlalchemy import create_engine, pool


def run_migrations_online():
    engine = create_engine(os.environ["APP_DB_URL"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=os.environ["APP_DB_URL"])
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
"""

OWN_ASYNC_ENGINE_ENV = """\
import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine


def do_run_migrations(connection):
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations():
    engine = create_async_engine(os.environ["APP_DB_URL"], poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


asyncio.run(run_async_migrations())
"""

REFUSED = r"env\.py connects to another database"
ADD_NOTE = "op.add_column('t1', sa.Column('note', sa.String(50)))"
DROP_NOTE = "op.drop_column('t1', 'note')"


def own_engine_project(root: Path, env: str = OWN_ENGINE_ENV) -> Path:
    """r1 creates t1, r2 adds t1.note (its downgrade drops the column and its values)."""
    location = write_migrations(root, 1)
    (location / "env.py").write_text(env)
    add_revision(location, "r2", "r1", upgrade=ADD_NOTE, downgrade=DROP_NOTE)
    return location


@pytest.fixture
def other_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """Database B, the one the app's own settings point at."""
    (tmp_path / "b").mkdir()
    with fresh_database(backend, tmp_path / "b") as url:
        yield url


def migrate_with_alembic(project: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bring ``url`` to r2 the way the project's own ``alembic upgrade`` would, with a row."""
    monkeypatch.setenv("APP_DB_URL", url)
    migrate(MigrateSettings(database_url=url))
    execute(url, "INSERT INTO t1 (id, name, note) VALUES (1, 'kept', 'precious')")


def assert_untouched(url: str, revision: str = "r2") -> None:
    """B is where it was: at ``revision``, its row and its values kept."""
    assert current_revisions(url) == {revision}
    assert execute(url, "SELECT id, name, note FROM t1") == [[(1, "kept", "precious")]]


def env_for(target: str, other: str) -> dict[str, str]:
    return subprocess_env(DATABASE_URL=target, APP_DB_URL=other)


def database_name(url: str) -> str:
    name = sa.make_url(url).database or ""
    return Path(name).name


def test_downgrade_refuses_another_database_and_keeps_its_rows(
    project: Path,
    database_url: str,
    other_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own_engine_project(project)
    migrate_with_alembic(project, other_url, monkeypatch)
    migrate_with_alembic(project, database_url, monkeypatch)

    result = cli(project, "downgrade", "-1", env=env_for(database_url, other_url))

    line = fails(result, 2, "env.py connects to another database", "nothing was migrated")
    assert database_name(database_url) in line
    assert database_name(other_url) in line
    assert 'config.attributes.get("connection")' in line
    assert 'config.get_main_option("sqlalchemy.url")' in line
    assert_untouched(other_url)
    assert_untouched(database_url)


def test_stamp_refuses_another_database(
    project: Path, database_url: str, other_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_engine_project(project)
    migrate_with_alembic(project, other_url, monkeypatch)

    result = cli(project, "stamp", "r1", env=env_for(database_url, other_url))

    fails(result, 2, "env.py connects to another database")
    assert_untouched(other_url)


def test_upgrade_refuses_before_touching_the_other_database(
    project: Path, database_url: str, other_url: str
) -> None:
    own_engine_project(project)

    result = cli(project, "upgrade", env=env_for(database_url, other_url))

    fails(result, 2, "env.py connects to another database", database_name(other_url))
    assert table_names(other_url) == set()  # not even a version table
    assert current_revisions(database_url) == set()


def test_the_lifespan_start_refuses_another_database(
    project: Path, database_url: str, other_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_engine_project(project)
    monkeypatch.setenv("APP_DB_URL", other_url)
    migrate(MigrateSettings(database_url=other_url, target="r1"))

    with pytest.raises(ConfigurationError, match=REFUSED):
        migrate(MigrateSettings(database_url=database_url))

    assert current_revisions(other_url) == {"r1"}
    assert execute(other_url, "SELECT id, name FROM t1") == [[]]
    assert current_revisions(database_url) == set()


@pytest.mark.parametrize(
    "check", [assert_upgrade_downgrade_roundtrip, assert_downgrade_leaves_no_trace]
)
def test_roundtrip_checks_refuse_and_the_other_database_keeps_its_rows(
    project: Path,
    database_url: str,
    other_url: str,
    monkeypatch: pytest.MonkeyPatch,
    check: object,
) -> None:
    own_engine_project(project)
    migrate_with_alembic(project, other_url, monkeypatch)

    with pytest.raises(ConfigurationError, match=REFUSED):
        check(url=database_url)  # type: ignore[operator]

    assert_untouched(other_url)
    assert table_names(database_url) == set()


def test_the_plugin_fixture_refuses_with_a_clear_error(
    pytester: pytest.Pytester,
    backend: str,
    other_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith(("MIGRATE_", "PYTEST_XDIST")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    own_engine_project(pytester.path)
    migrate_with_alembic(pytester.path, other_url, monkeypatch)
    pytester.makepyfile(test_user="def test_uses_it(migrated_database_url):\n    pass\n")
    args = ["-p", PLUGIN]
    if backend != "sqlite":
        args += ["--migrate-db-url", SERVERS[backend]]

    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess(*args)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ConfigurationError: env.py connects to another database*"])
    assert_untouched(other_url)


@pytest.mark.parametrize("command", ["upgrade", "downgrade"])
def test_an_env_py_of_its_own_on_the_same_database_still_works(
    project: Path, database_url: str, backend: str, command: str
) -> None:
    own_engine_project(project)
    same = sa.make_url(database_url)
    if backend != "sqlite":  # another spelling of the same server: the servers are compared
        same = same.set(host="localhost")
    env = env_for(database_url, same.render_as_string(hide_password=False))

    ok(cli(project, "upgrade", env=env))
    if command == "downgrade":
        ok(cli(project, "downgrade", "-1", env=env))

    assert current_revisions(database_url) == ({"r2"} if command == "upgrade" else {"r1"})


def test_an_async_env_py_of_its_own_is_checked_too(
    project: Path, database_url: str, other_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_engine_project(project, OWN_ASYNC_ENGINE_ENV)
    monkeypatch.setenv("APP_DB_URL", to_async(other_url))

    with pytest.raises(ConfigurationError, match=REFUSED):
        migrate(MigrateSettings(database_url=to_async(database_url)))
    assert table_names(other_url) == set()

    monkeypatch.setenv("APP_DB_URL", to_async(database_url))
    assert migrate(MigrateSettings(database_url=to_async(database_url))).applied == ["r1", "r2"]
    assert current_revisions(database_url) == {"r2"}
