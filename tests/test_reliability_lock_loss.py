"""The migration lock holds for as long as the migration runs, whatever closes idle connections;
if it goes anyway, nothing more is committed (``LockLost``) and no second migration runs beside
the first. Real CLI processes, a revision slower than the idle timeouts set here.

- ``idle timeout``: the database closes sessions idle for 1.5 s (PostgreSQL
  ``idle_session_timeout`` on the database; MariaDB ``wait_timeout`` for the first process's
  sessions), the revision runs 3 s, a second process waits: both exit 0, the revision runs once,
  no traceback. On PostgreSQL the revision also has an ``autocommit_block()``
  (``CREATE INDEX CONCURRENTLY``) beside the waiter and the lock's heartbeat.
- ``lock connection killed``: the lock's own session is terminated mid-revision (as a network cut
  or an operator would). PostgreSQL: the migrator rolls back and exits 1 naming the lost lock,
  the waiter migrates once. MariaDB: the migrator stops before its next revision with the same
  error, the database left at a named revision; SQLite: the lock file is removed mid-revision
  (a cleanup job), the migrator rolls back. Either way the next start reaches head.

Rounds: 1 per scenario and database by default, 20 with ``--heavy``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from fastapi_migrate.backends.mysql import lock_name
from fastapi_migrate.backends.postgresql import advisory_key

from .conftest import require_backend
from .progress_helpers import without_progress
from .reliability_helpers import (
    LOCKS,
    Proc,
    project_env,
    record,
    rounds,
    rows,
    spawn_cli,
    use_lock,
    wait_for,
    write_project,
    write_revision,
)
from .support import PG_SERVER, current_revisions, execute, fresh_database

SLOW = 3  # seconds the slow revision runs: twice the idle timeouts below
ROWS = 20
ITEMS = 'op.create_table("items", sa.Column("id", sa.Integer, primary_key=True))\n'


def slow_revision(table: str, extra: str = "") -> str:
    """Logs that it started (for the test to act, and to count runs), creates ``table``, then
    computes for ``SLOW`` seconds: its sessions sit idle meanwhile."""
    return (
        "import os\n"
        'with open(os.environ["FM_MARK"], "a") as mark:\n'
        f'    mark.write("{table}\\n")\n'
        f'op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))\n'
        f"{extra}"
        f"time.sleep({SLOW})\n"
    )


CONCURRENT_INDEX = (
    "with op.get_context().autocommit_block():\n"
    '    op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_items_id2 ON items (id)")\n'
)


class Round:
    """One round: a project at ``start`` with ROWS items, revisions ``a1`` (slow) and ``b1``."""

    def __init__(self, root: Path, url: str, backend: str, scenario: str) -> None:
        self.root = root
        self.url = url
        self.backend = backend
        self.marks = root / "marks"
        self.location = write_project(root)
        write_revision(self.location, "start", None, ITEMS)
        setup = spawn_cli("setup", root, project_env(url), root / "logs")
        assert setup.popen.wait(120) == 0, setup.output()
        execute(
            url, f"INSERT INTO items (id) VALUES {', '.join(f'({k})' for k in range(1, ROWS + 1))}"
        )
        # Statements of an autocommit block commit at once: only where the lock is kept.
        extra = CONCURRENT_INDEX if (backend, scenario) == ("postgresql", "idle timeout") else ""
        write_revision(self.location, "a1", "start", slow_revision("k1", extra))
        write_revision(
            self.location, "b1", "a1", 'op.create_table("k2", sa.Column("id", sa.Integer))'
        )

    def start(self, name: str, url: str | None = None) -> Proc:
        env = project_env(url or self.url, FM_MARK=str(self.marks), MIGRATE_LOCK_TIMEOUT="60")
        return spawn_cli(name, self.root, env, self.root / "logs")

    def runs_of_a1(self) -> int:
        return self.marks.read_text().split().count("k1") if self.marks.exists() else 0

    def wait_until_in_a1(self, proc: Proc) -> None:
        wait_for(lambda: self.runs_of_a1() >= 1, 60, f"{proc.name} to run a1", [proc])

    def items_kept(self) -> int:
        return len(rows(self.url, "SELECT id FROM items"))


def finished(proc: Proc) -> tuple[int, str]:
    code = proc.popen.wait(120)
    return code, proc.output().strip()


def one_clean_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = without_progress(output)  # each revision's start and end lines aside
    assert len(lines) == 1, output
    return lines[0]


def with_idle_timeout(backend: str, url: str) -> str:
    """Sessions idle for 1.5 s are closed: for the whole database (PostgreSQL), or the
    sessions of the URL returned (MariaDB: wait_timeout is per session)."""
    if backend == "postgresql":
        name = sa.make_url(url).database
        execute(PG_SERVER, f"ALTER DATABASE {name} SET idle_session_timeout = '1500ms'")
        return url
    return f"{url}?init_command={quote('SET SESSION wait_timeout = 1')}"


def idle_timeout_round(r: Round) -> None:
    first = r.start("first", with_idle_timeout(r.backend, r.url))
    r.wait_until_in_a1(first)
    second = r.start("second")
    (code1, out1), (code2, out2) = finished(first), finished(second)
    assert (code1, code2) == (0, 0), f"{out1}\n---\n{out2}"
    assert one_clean_line(out1).startswith("migration upgraded: from start to b1"), out1
    assert one_clean_line(out2).startswith("migration noop"), out2
    assert r.runs_of_a1() == 1
    assert current_revisions(r.url) == {"b1"}


def kill_lock_session(backend: str, url: str, root: Path) -> None:
    """End the lock's own session (or remove the SQLite lock file) while the migration runs;
    under the lease, take it over instead (as a process does once the holder stopped renewing:
    the lease does not live on a session)."""
    if os.environ.get("FM_TEST_LOCK") == "lease":
        execute(
            url,
            "UPDATE fastapi_migrate_lock SET owner = 'operator', fence = fence + 1, expires_at = 0",
        )
        return
    if backend == "sqlite":
        database = Path(sa.make_url(url).database or "")
        database.with_name(database.name + ".migrate-lock").unlink()
        return
    if backend == "postgresql":
        key = advisory_key(None, "alembic_version")
        found = execute(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"AND granted AND classid = {(key >> 32) & 0xFFFFFFFF} "
            f"AND objid = {key & 0xFFFFFFFF} AND objsubid = 1",
        )
        assert found[0] == [(True,)], found
        return
    name = lock_name(sa.make_url(url).database, None, "alembic_version")
    (holder,) = execute(url, f"SELECT IS_USED_LOCK('{name}')")[0][0]
    assert holder is not None
    execute(url, f"KILL CONNECTION {int(holder)}")  # type: ignore[call-overload]


def lock_killed_round(r: Round) -> None:
    first = r.start("first")
    r.wait_until_in_a1(first)
    waiter = r.start("waiter") if r.backend == "postgresql" else None
    kill_lock_session(r.backend, r.url, r.root)
    code, out = finished(first)
    assert code == 1, out
    line = one_clean_line(out)
    assert "the migration lock was lost while migrating" in line, line
    if r.backend == "mariadb":
        # a1's DDL committed by itself and its version row with it; b1 never started.
        assert "it stopped before the next revision; the database is left at a1" in line, line
        assert current_revisions(r.url) == {"a1"}
    else:
        assert "rolled back; the database is left at start" in line, line
    if waiter is not None:
        code, out = finished(waiter)
        assert code == 0, out
        assert one_clean_line(out).startswith("migration upgraded: from start to b1"), out
        assert r.runs_of_a1() == 2  # rolled back once, committed once
    else:
        again = r.start("again")
        code, out = finished(again)
        assert code == 0, out
    assert current_revisions(r.url) == {"b1"}


SCENARIOS = {
    "idle timeout": (idle_timeout_round, ("postgresql", "mariadb")),
    "lock connection killed": (lock_killed_round, ("postgresql", "mariadb", "sqlite")),
}


@LOCKS
@pytest.mark.parametrize(
    ("scenario", "backend"),
    [(s, b) for s, (_, backends) in SCENARIOS.items() for b in backends],
)
def test_lock_held_or_nothing_committed(
    scenario: str,
    backend: str,
    lock: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    require_backend(backend)
    label = use_lock(lock, backend, monkeypatch)
    run, _ = SCENARIOS[scenario]
    total = rounds(request.config, 1, 20)
    failures: list[str] = []
    lost = 0
    for i in range(total):
        root = tmp_path / f"round{i}"
        root.mkdir()
        monkeypatch.chdir(root)
        with fresh_database(backend, root) as url:
            r = Round(root, url, backend, scenario)
            try:
                run(r)
            except AssertionError as error:
                failures.append(f"round {i}: {error}")
            lost += ROWS - r.items_kept()
    what = "lease taken over" if lock == "lease" and scenario != "idle timeout" else scenario
    record(f"lock lost: {what}", label, total, len(failures), lost)
    assert lost == 0
    assert not failures, "\n".join(failures)
