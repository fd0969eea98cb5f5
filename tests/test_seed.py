"""``MIGRATE_SEED`` / ``seed=``: what a prestart script ran after ``alembic upgrade head``, run by
every start under the migration lock, after the migration (issue 23, point 3). Real uvicorn
workers, the real CLI, SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import ConfigurationError, MigrateSettings, migrate_on_startup
from fastapi_migrate.backends.database import Database
from fastapi_migrate.engine.lock import migration_lock

from .cli_helpers import cli, fails, ok
from .conftest import require_backend
from .reliability_helpers import spawn_uvicorn, wait_for
from .support import (
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    subprocess_env,
    write_migrations,
)

USERS = """\
op.create_table(
    'users',
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('email', sa.String(100), nullable=False),
)
op.create_index('ix_users_email', 'users', ['email'], unique=True)"""

# As the full-stack FastAPI template's initial_data.py: a first superuser, if there is none.
SEEDS = """\
import sqlalchemy as sa


def first_user(connection):
    email = "admin@example.com"
    found = connection.execute(sa.text("SELECT id FROM users WHERE email = :e"), {"e": email})
    if found.first() is None:
        connection.execute(sa.text("INSERT INTO users (email) VALUES (:e)"), {"e": email})


def one_more(connection):
    n = connection.execute(sa.text("SELECT count(*) FROM users")).scalar()
    connection.execute(sa.text("INSERT INTO users (email) VALUES (:e)"), {"e": f"u{n}@x"})


def broken(connection):
    connection.execute(sa.text("INSERT INTO users (email) VALUES ('half@x')"))
    raise RuntimeError("the seed broke")
"""

APP = """\
from fastapi import FastAPI

from fastapi_migrate import migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())


@app.get("/ready")
def ready() -> dict[str, str]:
    return {"status": "ready"}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    location = write_migrations(tmp_path, 2)
    add_revision(location, "r3", "r2", upgrade=USERS, downgrade="op.drop_table('users')")
    (tmp_path / "seeds.py").write_text(SEEDS)
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param != "sqlite":
        require_backend(request.param)
    with fresh_database(request.param, tmp_path) as url:
        yield url


def emails(url: str) -> list[str]:
    return [str(row[0]) for row in execute(url, "SELECT email FROM users ORDER BY id")[0]]


def test_four_uvicorn_workers_on_a_fresh_database_seed_one_first_user(
    project: Path, database: str, tmp_path: Path
) -> None:
    env = subprocess_env(
        DATABASE_URL=database, MIGRATE_SCRIPT_LOCATION="migrations", MIGRATE_SEED="seeds:first_user"
    )
    server = spawn_uvicorn("uvicorn4", project, env, tmp_path / "logs", workers=4)
    try:
        wait_for(
            lambda: (
                server.output().count("Application startup complete.") >= 4
                or "startup failed" in server.output()
                or server.popen.poll() is not None
            ),
            180,
            "four workers started",
            [server],
        )
    finally:
        server.stop()
    output = server.output()
    assert output.count("Application startup complete.") == 4, output
    assert "startup failed" not in output and "Traceback" not in output, output
    assert output.count("seeded with seeds:first_user") == 4, output
    assert emails(database) == ["admin@example.com"]
    assert current_revisions(database) == {"r3"}


def test_cli_upgrade_seeds_on_every_run_and_a_failing_seed_keeps_the_migration(
    project: Path, database: str
) -> None:
    env = subprocess_env(
        DATABASE_URL=database, MIGRATE_SCRIPT_LOCATION="migrations", MIGRATE_SEED="seeds:one_more"
    )
    first = ok(cli(project, "upgrade", env=env))
    assert "upgraded" in first.stdout
    second = ok(cli(project, "upgrade", env=env))  # at head: the seed runs all the same
    assert "noop" in second.stdout
    assert emails(database) == ["u0@x", "u1@x"]

    env["MIGRATE_SEED"] = "seeds:broken"
    line = fails(cli(project, "upgrade", env=env), 1, "seed seeds:broken failed", "the seed broke")
    assert "r3" in line
    assert emails(database) == ["u0@x", "u1@x"]  # its transaction rolled back
    assert current_revisions(database) == {"r3"}


@pytest.mark.parametrize(
    ("seed", "words"),
    [
        ("seeds", "not of the form module:function"),
        ("nowhere:first_user", "cannot import 'nowhere'"),
        ("seeds:missing", "has no attribute 'missing'"),
        ("seeds:sa", "not a function"),
    ],
)
def test_a_bad_seed_path_is_a_configuration_error_before_anything_runs(
    project: Path, tmp_path: Path, seed: str, words: str
) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    env = subprocess_env(DATABASE_URL=url, MIGRATE_SCRIPT_LOCATION="migrations", MIGRATE_SEED=seed)
    fails(cli(project, "upgrade", env=env), 2, "MIGRATE_SEED", words)
    assert current_revisions(url) == set()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_no_seed_stays_lock_free_and_a_seed_waits_for_the_lock(
    project: Path, tmp_path: Path, backend: str
) -> None:
    """Another process holds the migration lock: a start at head without a seed is the no-op
    that never asks for it; with a seed it waits for the lock (here: times out)."""
    if backend != "sqlite":
        require_backend(backend)
    with fresh_database(backend, tmp_path) as url:
        env = subprocess_env(DATABASE_URL=url, MIGRATE_SCRIPT_LOCATION="migrations")
        ok(cli(project, "upgrade", env=env))
        with migration_lock(
            Database(url), version_table="alembic_version", version_table_schema=None, timeout=10
        ):
            assert "noop" in ok(cli(project, "upgrade", env=env)).stdout
            env.update(MIGRATE_SEED="seeds:first_user", MIGRATE_LOCK_TIMEOUT="1")
            fails(cli(project, "upgrade", env=env), 1, "lock")
        assert emails(url) == []


def test_seed_of_migrate_on_startup_is_a_function_or_a_path(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    url = f"sqlite:///{tmp_path / 'app.db'}"
    calls: list[str] = []

    def seed(connection: sa.Connection) -> None:
        calls.append(
            connection.execute(sa.text("SELECT version_num FROM alembic_version")).one()[0]
        )

    settings = MigrateSettings(database_url=url, script_location="migrations")
    for app in (
        FastAPI(lifespan=migrate_on_startup(settings=settings, seed=seed)),
        FastAPI(lifespan=migrate_on_startup(settings=settings, seed="seeds:first_user")),
    ):
        with TestClient(app):
            pass
    assert calls == ["r3"]  # after the migration
    assert emails(url) == ["admin@example.com"]

    async def not_sync(connection: sa.Connection) -> None:
        pass

    with pytest.raises(ConfigurationError, match="async function"):
        migrate_on_startup(settings=settings, seed=not_sync)
