"""One engine for one tree or many: what used to differ between the two paths, the CLI's trees,
and the CLI's validation of ``MIGRATE_MODE``. Real databases, real processes where it matters."""

from __future__ import annotations

import fcntl
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from fastapi_migrate import MigrateSettings, MigrationResult, migrate
from fastapi_migrate.backends.mysql import lock_name
from fastapi_migrate.backends.postgresql import advisory_key

from .cli_helpers import cli, fails, ok
from .conftest import require_backend
from .support import (
    PG_SERVER,
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    subprocess_env,
    table_names,
)
from .test_trees import APP, AUTH, versions, write_app, write_auth

TREES = [AUTH, APP]


class Migrating(threading.Thread):
    """``migrate()`` in a thread of this process, as a lifespan runs it; keeps its outcome."""

    def __init__(self, settings: MigrateSettings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.result: MigrationResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = migrate(self.settings)
        except BaseException as error:  # reported by the test
            self.error = error

    def outcome(self, timeout: float) -> MigrationResult:
        self.join(timeout)
        assert not self.is_alive(), f"still running after {timeout}s"
        assert self.error is None, repr(self.error)
        assert self.result is not None
        return self.result


class LogEvent(logging.Handler):
    """Sets an event when fastapi-migrate logs a message containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@contextmanager
def logged(text: str) -> Iterator[threading.Event]:
    logger = logging.getLogger("fastapi_migrate")
    handler = LogEvent(text)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def upgrade_in_another_process(project: Path, url: str, **env: str) -> None:
    """`fastapi-migrate upgrade` of every tree, as a release job or another replica does."""
    ok(cli(project, "upgrade", env=subprocess_env(DATABASE_URL=url, **env)))


@contextmanager
def lock_held_elsewhere(backend: str, url: str) -> Iterator[None]:
    """The app's migration lock, held by another session (or open file) than the test's start."""
    if backend == "sqlite":
        path = Path(sa.make_url(url).database or "").resolve()
        with open(path.with_name(path.name + ".migrate-lock"), "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield
        return
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(None, "alembic_version")}
            )
        else:
            name = lock_name(sa.make_url(url).database, None, "alembic_version")
            assert conn.execute(sa.text("SELECT GET_LOCK(:n, 5)"), {"n": name}).scalar() == 1
        yield
    engine.dispose()


def test_a_multi_tree_waiter_ends_as_soon_as_another_process_migrated(
    project: Path, backend: str, database_url: str
) -> None:
    """While the lock stays held, another process brings every tree to its target: the waiting
    start sees it at once and does nothing (it used to wait for the lock's release)."""
    write_auth(project)
    write_app(project)
    settings = MigrateSettings(database_url=database_url, trees=TREES, lock_timeout=120)
    with lock_held_elsewhere(backend, database_url), logged("no-op check") as checked:
        waiter = Migrating(settings)
        waiter.start()
        assert checked.wait(60), "the start never tried the fast no-op"
        upgrade_in_another_process(
            project, database_url, MIGRATE_TREES=json.dumps(TREES), MIGRATE_LOCK="false"
        )
        result = waiter.outcome(60)  # the lock is still held here
    assert result.action == "noop"
    assert {name: r.action for name, r in result.trees.items()} == {"auth": "noop", "app": "noop"}
    assert versions(database_url)["auth"] == {"a2"} and versions(database_url)["app"] == {"r2"}


def _session_on(database: str | None, timeout: float = 60) -> bool:
    """Whether a session shows up on ``database`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = execute(
            PG_SERVER, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"
        )
        if found[0][0][0]:
            return True
        time.sleep(0.05)
    return False


def test_a_multi_tree_wait_survives_failing_reads(project: Path, tmp_path: Path) -> None:
    """MIGRATE_MODE=wait with trees, while the server refuses connections and ends the
    waiter's own (a restarting server): reads that fail are retried, and the start ends
    "waited" once another process migrated (it used to end on the first failed read)."""
    require_backend("postgresql")
    write_auth(project)
    write_app(project)
    with fresh_database("postgresql", tmp_path) as url:
        name = sa.make_url(url).database
        settings = MigrateSettings(database_url=url, trees=TREES, mode="wait", lock_timeout=120)
        try:
            with logged("reading the database failed, retrying") as failed_read:
                with logged("MIGRATE_MODE=wait:") as waiting:
                    waiter = Migrating(settings)
                    waiter.start()
                    assert waiting.wait(60), "the start never began to wait"
                # Its kept connection is open (else its next read would be a new connection,
                # refused, retried by the connect loop rather than as a failed read).
                assert _session_on(name), "the waiter never connected to read"
                execute(
                    PG_SERVER,
                    f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false",
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}'",
                )
                assert failed_read.wait(60), "no read of the waiter failed"
            execute(PG_SERVER, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
            upgrade_in_another_process(project, url, MIGRATE_TREES=json.dumps(TREES))
            result = waiter.outcome(60)
        finally:
            execute(PG_SERVER, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        assert result.action == "waited"
        assert {n: r.action for n, r in result.trees.items()} == {"auth": "waited", "app": "waited"}
        assert current_revisions(url, "auth_version") == {"a2"}


def test_cli_upgrade_refuses_a_mode_it_does_not_know(project: Path, tmp_path: Path) -> None:
    """A typo in a release job's MIGRATE_MODE is exit 2 naming it; nothing is migrated."""
    write_app(project)
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    result = cli(project, "upgrade", env=subprocess_env(DATABASE_URL=url, MIGRATE_MODE="sideways"))
    fails(result, 2, "MIGRATE_MODE", "sideways")
    assert not (tmp_path / "app.sqlite").exists() or table_names(url) == set()
    # Any mode the app may run with is set aside by the release job: it migrates.
    ok(cli(project, "upgrade", env=subprocess_env(DATABASE_URL=url, MIGRATE_MODE="wait")))
    assert current_revisions(url) == {"r2"}


def test_cli_commands_cover_every_tree_or_take_one_by_name(
    project: Path, database_url: str
) -> None:
    write_auth(project)
    write_app(project)
    env = subprocess_env(DATABASE_URL=database_url, MIGRATE_TREES=json.dumps(TREES))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(project, *args, env=env)

    assert ok(run("current")).stdout.splitlines() == [
        "auth: base (empty database)",
        "app: base (empty database)",
    ]
    fails(run("check"), 1)
    ok(run("upgrade"))
    assert ok(run("current")).stdout.splitlines() == ["auth: a2 (head)", "app: r2 (head)"]
    assert ok(run("check")).stdout.startswith("ok: the database is at head (a2,r2)")

    # One tree's commands need its name, and say which names there are.
    for args in (
        ("stamp", "a1"),
        ("downgrade", "a1"),
        ("revision", "-m", "x"),
        ("upgrade", "--sql"),
    ):
        fails(run(*args), 2, "--tree", "auth, app")
    fails(run("stamp", "a1", "--tree", "billing"), 2, "'billing' is not one of them")

    ok(run("downgrade", "a1", "--tree", "auth"))
    assert versions(database_url)["auth"] == {"a1"} and versions(database_url)["app"] == {"r2"}
    assert ok(run("current")).stdout.splitlines() == ["auth: a1", "app: r2 (head)"]
    problem = fails(run("check"), 1)
    assert "check failed: 1 problem" in problem
    assert "migration tree 'auth': the database is at a1, not at head (a2)" in run("check").stdout

    sql = ok(run("upgrade", "--sql", "--tree", "auth")).stdout
    assert "auth_sessions" in sql and "CREATE TABLE notes" not in sql
    assert versions(database_url)["auth"] == {"a1"}  # --sql changes nothing

    ok(run("stamp", "a2", "--tree", "auth"))
    assert versions(database_url)["auth"] == {"a2"}
    ok(run("revision", "-m", "more notes", "--rev-id", "r3", "--tree", "app"))
    assert list((project / "migrations" / "versions").glob("r3_*.py"))
    assert not list((project / "auth" / "migrations" / "versions").glob("r3_*.py"))
    assert ok(run("heads", "--tree", "app")).stdout.startswith("r3 (head)")


def test_cli_check_plans_as_a_starting_app_does(project: Path, database_url: str) -> None:
    """check honours MIGRATE_BASELINE and MIGRATE_UNKNOWN_REVISION like the startup."""
    location = write_app(project)
    add_revision(location, "r3", "r2", table="t3")
    env = subprocess_env(DATABASE_URL=database_url)
    execute(database_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY)")

    # Tables but no version table: an error without a baseline, adoption pending with one.
    unversioned = cli(project, "check", env=env)
    assert unversioned.returncode == 1
    assert "no version table" in unversioned.stdout and "MIGRATE_BASELINE" in unversioned.stdout
    adopt = cli(project, "check", env={**env, "MIGRATE_BASELINE": "r1"})
    assert adopt.returncode == 1
    assert (
        "the database is at no revision, not at head (r3): 2 migration(s) pending (r2, r3)"
        in adopt.stdout
    )

    # At a revision these scripts do not know (newer code migrated): an error, or ok if ignored.
    execute(database_url, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    execute(database_url, "INSERT INTO alembic_version VALUES ('r9')")
    assert "r9" in cli(project, "check", env=env).stdout
    assert cli(project, "check", env=env).returncode == 1
    ignored = cli(project, "check", env={**env, "MIGRATE_UNKNOWN_REVISION": "ignore"})
    assert ignored.returncode == 0, ignored.stdout + ignored.stderr
