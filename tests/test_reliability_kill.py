"""``kill -9`` at each point of a migration, then start again: nothing lost, no stale lock.

A real process (the CLI or uvicorn, in turn) runs two new revisions against a
database whose ``items`` table holds rows. It is paused at one point (the project's env.py and
revision files read ``FM_TEST_PAUSE_AT``) and killed there with SIGKILL:

- ``waiting``: waiting for the lock another process holds (the waiter is killed);
- ``before_ddl``: holding the lock, before any DDL;
- ``mid_ddl``: inside revision ``a``, after its first statement;
- ``between_revisions``: ``a`` done, before ``b`` starts;
- ``after_last``: both revisions committed, the lock not yet released.

The next start must bring the database to head by itself with every row kept (PostgreSQL,
SQLite: their DDL is transactional). On MariaDB, whose DDL is not, a kill inside a revision
leaves it half-applied: the next start stops with one clear error naming the revision and what
to do; doing that, the start after it reaches head. A stale lock would make the next start
fail with ``LockTimeout`` (its ``MIGRATE_LOCK_TIMEOUT`` is 20 s).

Rounds: 1 per point and database by default, 20 with ``--heavy``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import require_backend
from .progress_helpers import without_progress
from .reliability_helpers import (
    LOCKS,
    POINTS,
    Proc,
    check_harness,
    conclude,
    connections_to,
    has_open,
    project_env,
    record,
    rounds,
    rows,
    spawn_cli,
    spawn_uvicorn,
    use_lock,
    wait_for,
    wait_paused,
    write_project,
    write_revision,
)
from .support import HarnessError, current_revisions, execute

ROWS = 50
ITEMS = """\
op.create_table(
    "items",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
)
"""


def revision_a(i: int) -> str:
    return (
        f'op.create_table("k{i}", sa.Column("id", sa.Integer, primary_key=True))\n'
        'pause("mid_ddl")\n'
        f'op.add_column("items", sa.Column("c{i}", sa.Integer, nullable=True))\n'
        f'op.execute("UPDATE items SET c{i} = id")\n'
    )


def revision_b(i: int) -> str:
    return f'pause("between_revisions")\nop.create_index("ix_items_c{i}", "items", ["c{i}"])\n'


def start(kind: str, name: str, project: Path, env: dict[str, str]) -> Proc:
    logs = project / "logs"
    if kind == "cli":
        return spawn_cli(name, project, env, logs)
    return spawn_uvicorn(name, project, env, logs)


def wait_waiting(backend: str, url: str, waiter: Proc, before: int) -> None:
    """Until ``waiter`` polls for the lock: its lock connection is open (or, on SQLite, it
    has the lock file open)."""
    if backend == "sqlite":
        lock_file = Path(url.removeprefix("sqlite:///") + ".migrate-lock").resolve()
        wait_for(lambda: has_open(waiter.popen.pid, lock_file), 60, "the waiter", [waiter])
    else:
        wait_for(lambda: connections_to(url) > before, 60, "the waiter", [waiter])
    time.sleep(0.3)  # connected: it is now in its poll loop


class Round:
    """One kill round: its own pause folder, processes and what went wrong."""

    def __init__(self, project: Path, url: str, backend: str, index: int, point: str) -> None:
        self.project, self.url, self.backend, self.i = project, url, backend, index
        self.folder = project / f"pause-{index}"
        self.folder.mkdir()
        # The CLI and uvicorn take turns, so that one round per point covers both.
        self.kind = "cli" if (index + POINTS.index(point)) % 2 else "uvicorn"

    def env(self, point: str | None = None, **extra: str) -> dict[str, str]:
        pause = {"FM_TEST_PAUSE_AT": point, "FM_TEST_PAUSE_DIR": str(self.folder)} if point else {}
        return project_env(self.url, MIGRATE_LOCK_TIMEOUT="20", **pause, **extra)

    def kill_at(self, point: str) -> None:
        if point == "waiting":
            holder = spawn_cli(f"holder-{self.i}", self.project, self.env("before_ddl"), self.logs)
            wait_paused(self.folder, holder)
            before = connections_to(self.url) if self.backend != "sqlite" else 0
            waiter = start(self.kind, f"waiter-{self.i}", self.project, self.env())
            wait_waiting(self.backend, self.url, waiter, before)
            waiter.kill9()
            (self.folder / "resume").touch()
            holder.popen.wait(60)
            if holder.popen.returncode != 0:
                check_harness(holder)
            assert holder.popen.returncode == 0, holder.output()
            return
        victim = start(self.kind, f"victim-{self.i}", self.project, self.env(point))
        wait_paused(self.folder, victim)
        victim.kill9()

    @property
    def logs(self) -> Path:
        return self.project / "logs"

    def start_again(self, name: str) -> tuple[int, str]:
        """Run the CLI once more; its exit code and output (a ``HarnessError`` if the harness
        failed it)."""
        proc = spawn_cli(name, self.project, self.env(), self.logs)
        proc.popen.wait(120)
        if proc.popen.returncode != 0:
            check_harness(proc)
        return proc.popen.returncode, proc.output()


def half_applied_error(output: str, i: int) -> list[str]:
    """What is wrong with MariaDB's message for a half-applied revision ``a{i}``."""
    lines = without_progress(output.strip())
    problems = [] if len(lines) == 1 else [f"not one line: {output}"]
    for words in (f"revision a{i}", "half-applied", f"k{i}", "fastapi-migrate stamp"):
        if words not in output:
            problems.append(f"{words!r} missing from: {output}")
    return problems


@LOCKS
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_kill_9_then_start_again(
    project: Path,
    database_url: str,
    backend: str,
    point: str,
    lock: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_backend(backend)
    label = use_lock(lock, backend, monkeypatch)
    total = rounds(request.config, default=1, full=20)
    location = write_project(project)
    write_revision(location, "start", None, ITEMS)
    setup = spawn_cli("setup", project, project_env(database_url), project / "logs")
    if setup.popen.wait(120) != 0:
        check_harness(setup)
    assert setup.popen.returncode == 0, setup.output()
    values = ", ".join(f"({k}, 'item {k}')" for k in range(1, ROWS + 1))
    execute(database_url, f"INSERT INTO items (id, name) VALUES {values}")
    expected = [(k, f"item {k}") for k in range(1, ROWS + 1)]

    failures: list[str] = []
    harness: list[str] = []
    lost = human_steps = ran = 0
    takeovers: list[float] = []
    head = "start"
    for i in range(1, total + 1):
        write_revision(location, f"a{i}", head, revision_a(i))
        write_revision(location, f"b{i}", f"a{i}", revision_b(i))
        head = f"b{i}"
        try:
            failures += kill_round(
                project, database_url, backend, point, i, head, expected, takeovers
            )
        except HarnessError as error:
            # The round proves nothing either way; the next ones would start from its leftovers.
            harness.append(f"round {i}: {error}")
            break
        ran += 1
        if backend == "mariadb" and point == "mid_ddl":
            human_steps += 1
        kept = rows(database_url, "SELECT id, name FROM items ORDER BY id")
        lost += len(set(expected) - set(kept))

    note = f"{human_steps} human step(s) as the error said" if human_steps else ""
    numbers = {}
    if takeovers and lock == "lease":  # the next start waits for the killed holder's lease
        numbers = {"takeover_max_seconds": round(max(takeovers), 1)}
        done = f"next start done {min(takeovers):.1f}-{max(takeovers):.1f}s after the kill"
        note = f"{note}; {done}" if note else done
    record(f"kill -9: {point}", label, ran, len(failures), lost, note, len(harness), **numbers)
    conclude(failures, harness)


def kill_round(
    project: Path,
    database_url: str,
    backend: str,
    point: str,
    i: int,
    head: str,
    expected: list[tuple[int, str]],
    takeovers: list[float],
) -> list[str]:
    """Round ``i``: kill at ``point``, start again; what went wrong with the migration.
    ``takeovers``: how long each next start took after a kill of the lock's holder."""
    failures: list[str] = []
    step = Round(project, database_url, backend, i, point)
    step.kill_at(point)

    killed = time.monotonic()
    code, output = step.start_again(f"again-{i}")
    if point in ("before_ddl", "mid_ddl", "between_revisions"):
        takeovers.append(time.monotonic() - killed)
    if backend == "mariadb" and point == "mid_ddl":
        # The one case that needs a human: do what the message says, start again.
        failures += [f"round {i}: {p}" for p in half_applied_error(output, i) if code == 1]
        if code != 1:
            failures.append(f"round {i}: expected exit 1, got {code}: {output}")
        execute(database_url, f"DROP TABLE k{i}")
        code, output = step.start_again(f"after-fix-{i}")
    if code != 0:
        failures.append(f"round {i}: the next start exited {code}: {output}")
    if current_revisions(database_url) != {head}:
        failures.append(f"round {i}: not at head {head}: {current_revisions(database_url)}")
    kept = rows(database_url, "SELECT id, name FROM items ORDER BY id")
    if kept != expected:
        failures.append(f"round {i}: items changed: {len(kept)} rows")
    if rows(database_url, f"SELECT count(*) FROM items WHERE c{i} = id") != [(ROWS,)]:
        failures.append(f"round {i}: revision a{i} did not fill c{i}")
    return failures
