"""The database drops the migrating connection mid-migration (``pg_terminate_backend``,
MariaDB ``KILL``), as a failover or a server restart does. Only the backends of this test's own
database are terminated; the shared servers keep running.

The migrating process must stop with one clear line naming the revision and where the database
was left; the database must be consistent (rows kept, at a revision); the next start must reach
head by itself, with no stale lock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate.backends.mysql import lock_name

from .progress_helpers import without_progress
from .reliability_helpers import (
    project_env,
    record,
    rows,
    spawn_cli,
    wait_for,
    wait_paused,
    write_project,
    write_revision,
)
from .support import PG_SERVER, current_revisions, execute, table_names
from .test_reliability_kill import ITEMS, ROWS, revision_a, revision_b
from .test_reliability_locks import holder_and_waiters


def prepare(project: Path, url: str) -> list[tuple[object, ...]]:
    """The database at ``start`` with ROWS items; revisions a1 and b1 pending."""
    location = write_project(project)
    write_revision(location, "start", None, ITEMS)
    setup = spawn_cli("setup", project, project_env(url), project / "logs")
    assert setup.popen.wait(120) == 0, setup.output()
    values = ", ".join(f"({k}, 'item {k}')" for k in range(1, ROWS + 1))
    execute(url, f"INSERT INTO items (id, name) VALUES {values}")
    write_revision(location, "a1", "start", revision_a(1))
    write_revision(location, "b1", "a1", revision_b(1))
    return rows(url, "SELECT id, name FROM items ORDER BY id")


def run_and_drop(project: Path, url: str, point: str, drop: Callable[[], int]) -> tuple[int, str]:
    """Run the migration, pause it at ``point``, ``drop`` connections, resume it."""
    folder = project / "pause"
    folder.mkdir()
    env = project_env(url, FM_TEST_PAUSE_AT=point, FM_TEST_PAUSE_DIR=str(folder))
    proc = spawn_cli("victim", project, env, project / "logs")
    wait_paused(folder, proc)
    assert drop() > 0, "no connection was dropped"
    (folder / "resume").touch()
    return proc.popen.wait(120), proc.output().strip()


def start_again(project: Path, url: str) -> tuple[int, str]:
    proc = spawn_cli(
        "again", project, project_env(url, MIGRATE_LOCK_TIMEOUT="20"), project / "logs"
    )
    return proc.popen.wait(120), proc.output()


def one_clear_line(output: str, *words: str) -> None:
    """One error line naming ``words``; at most a warning line before it, no traceback (the
    progress lines of the revisions that started are not counted)."""
    lines = without_progress(output)
    assert "Traceback" not in output and len(lines) <= 2, output
    assert lines[-1].startswith("fastapi-migrate: error: "), output
    for word in words:
        assert word in lines[-1], output


@pytest.mark.parametrize(
    "which",
    ["migrating", "all"],
    ids=["the-migrating-connection", "every-connection-lock-too"],
)
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgresql_connection_terminated_mid_revision(
    project: Path, database_url: str, which: str
) -> None:
    before = prepare(project, database_url)
    name = sa.make_url(database_url).database
    only = "AND state = 'idle in transaction'" if which == "migrating" else ""
    query = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
        f"'{name}' AND pid <> pg_backend_pid() {only}"
    )
    code, output = run_and_drop(
        project, database_url, "mid_ddl", lambda: len(execute(PG_SERVER, query)[0])
    )
    assert code == 1, output
    one_clear_line(output, "revision a1 failed", "the database is left at start")
    if which == "all":
        assert "the migration lock's connection was lost" in without_progress(output)[0]
    # Rolled back as a whole: a1's table is gone, every row is there.
    assert current_revisions(database_url) == {"start"}
    assert "k1" not in table_names(database_url)
    assert rows(database_url, "SELECT id, name FROM items ORDER BY id") == before

    code, output = start_again(project, database_url)
    assert code == 0, output
    assert "migration upgraded: from start to b1, applied 2 [a1,b1]" in output
    assert rows(database_url, "SELECT id, name FROM items ORDER BY id") == before
    record(f"connection terminated mid-revision ({which})", "postgresql", 1, 0, 0)


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_mariadb_connection_killed_between_revisions(project: Path, database_url: str) -> None:
    """MariaDB committed a1 (its DDL and its version row) before the connection died at the
    start of b1: the next start applies b1 alone."""
    before = prepare(project, database_url)
    name = sa.make_url(database_url).database
    lock = lock_name(name, None, "alembic_version")

    def kill_the_migrating_connection() -> int:
        """Every connection of this database but the lock's (and this probe)."""
        found = rows(
            database_url,
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = "
            f"'{name}' AND ID <> CONNECTION_ID() AND ID <> IS_USED_LOCK('{lock}')",
        )
        execute(database_url, *(f"KILL CONNECTION {row[0]}" for row in found))
        return len(found)

    code, output = run_and_drop(
        project, database_url, "between_revisions", kill_the_migrating_connection
    )
    assert code == 1, output
    one_clear_line(output, "revision b1 failed", "the database is left at a1")
    assert current_revisions(database_url) == {"a1"}
    assert rows(database_url, "SELECT id, name FROM items ORDER BY id") == before

    code, output = start_again(project, database_url)
    assert code == 0, output
    assert "migration upgraded: from a1 to b1, applied 1 [b1]" in output
    assert rows(database_url, "SELECT count(*) FROM items WHERE c1 = id") == [(ROWS,)]
    record("connection killed between revisions", "mariadb", 1, 0, 0)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_waiter_that_loses_its_connection_says_so(project: Path, database_url: str) -> None:
    """A waiter's lock connection dies (a failover while it polls): it stops with one clear
    line; the migrator is not disturbed and the next start is a no-op."""
    before = prepare(project, database_url)
    holder, waiters, folder = holder_and_waiters(project, database_url, 1)
    name = sa.make_url(database_url).database
    polling = (
        f"FROM pg_stat_activity WHERE datname = '{name}' "
        "AND query LIKE 'SELECT pg_try_advisory_lock%'"
    )
    # The waiter's lock connection, once it has polled (it may have other connections open).
    wait_for(lambda: execute(PG_SERVER, f"SELECT pid {polling}")[0], 60, "the poll", waiters)
    terminated = execute(PG_SERVER, f"SELECT pg_terminate_backend(pid) {polling}")[0]
    assert terminated == [(True,)], terminated

    assert waiters[0].popen.wait(60) == 1, waiters[0].output()
    one_clear_line(
        waiters[0].output(),
        "lost the connection to postgresql+psycopg://postgres@127.0.0.1:5432/",
        "while waiting for the migration lock",
    )
    (folder / "resume").touch()
    assert holder.popen.wait(60) == 0, holder.output()
    code, output = start_again(project, database_url)
    assert code == 0 and "migration noop: from b1 to b1" in output, output
    assert rows(database_url, "SELECT id, name FROM items ORDER BY id") == before
    record("a waiter's connection terminated while it polls", "postgresql", 1, 0, 0)
