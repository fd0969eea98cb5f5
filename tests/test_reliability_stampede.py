"""Stampede: 16 processes start at once against one database, round after round.

Each round: 6 ``fastapi-migrate upgrade`` commands, 9 single uvicorn apps and one
``uvicorn --workers 4`` (19 lifespans and commands in all) start together; a new revision was
added since the last round. Every revision inserts one row into ``revlog``, so a revision
applied twice (or lost) shows as a count other than one. No process may fail, exactly one start
applies the new revision, every other one sees the database at head.

Rounds: 2 per database in the default run (the first replays from an empty database), 20 with
``--heavy``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from .reliability_helpers import (
    LOCKS,
    Proc,
    conclude,
    project_env,
    record,
    rounds,
    rows,
    spawn,
    spawn_cli,
    spawn_uvicorn,
    summaries,
    use_lock,
    wait_for,
    write_project,
    write_revision,
)
from .support import HarnessError, add_revision, current_revisions, write_migrations

CLIS, SINGLE_APPS, WORKERS = 6, 9, 4
STARTS = CLIS + SINGLE_APPS + WORKERS
ROUND_TIMEOUT = 240  # no round takes near this long: reaching it means a deadlock

CREATE_LOG = """\
op.create_table(
    "revlog",
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("revision", sa.String(40), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
)
"""


def log_row(revision: str) -> str:
    """Insert this revision's row, then linger so that the others surely wait for the lock."""
    return (
        'op.execute(sa.text("INSERT INTO revlog (revision, pid) VALUES (:r, :p)")'
        f".bindparams(r={revision!r}, p=__import__('os').getpid()))\n"
        "__import__('time').sleep(0.2)\n"
    )


def name(k: int) -> str:
    return f"s{k:03d}"


def start_all(project: Path, env: dict[str, str], logs: Path, procs: list[Proc]) -> None:
    """Start the round's processes into ``procs`` (so that those started are stopped even if a
    later one cannot be spawned)."""
    procs.append(spawn_uvicorn("app-workers", project, env, logs, workers=WORKERS))
    for i in range(max(CLIS, SINGLE_APPS)):
        if i < SINGLE_APPS:
            procs.append(spawn_uvicorn(f"app-{i}", project, env, logs))
        if i < CLIS:
            procs.append(spawn_cli(f"cli-{i}", project, env, logs))


def finished(proc: Proc) -> bool:
    """A command has exited; a server has run all its lifespans (or exited: a failure)."""
    if proc.popen.poll() is not None:
        return True
    if proc.port is None:
        return False
    out = proc.output()
    return out.count("Application startup complete.") >= max(proc.workers, 1)


def run_round(project: Path, env: dict[str, str], logs: Path) -> tuple[float, list[str], str, str]:
    """Start everything, wait for all; (wall seconds, summary lines, migration problems,
    harness problems). A process the harness failed (spawn, bind, its socket) is a harness
    problem, whatever else it printed."""
    started = time.monotonic()
    procs: list[Proc] = []
    try:
        start_all(project, env, logs, procs)
        wait_for(lambda: all(finished(p) for p in procs), ROUND_TIMEOUT, "every start", procs)
        wall = time.monotonic() - started
    finally:
        for p in procs:
            if p.port is not None or p.popen.poll() is None:
                p.stop()
    problems = []
    harness = []
    lines: list[str] = []
    for p in procs:
        out = p.output()
        lines += summaries(out)
        code = p.popen.returncode
        failed = (p.port is None and code != 0) or (
            p.port is not None and ("startup failed" in out or "Traceback" in out)
        )
        if not failed:
            continue
        cause = p.harness_cause()
        if cause:
            harness.append(f"{p.name} could not run: {cause}\n{out[-2000:]}")
        elif p.port is None:
            problems.append(f"{p.name} exited {code}: {out[-2000:]}")
        else:
            problems.append(f"{p.name} failed to start: {out[-2000:]}")
    return wall, lines, "\n".join(problems), "\n".join(harness)


@LOCKS
def test_stampede_applies_every_revision_exactly_once(
    project: Path,
    database_url: str,
    backend: str,
    lock: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    label = use_lock(lock, backend, monkeypatch)
    total = rounds(request.config, default=2, full=20)
    location = write_project(project)
    write_revision(location, name(1), None, CREATE_LOG + log_row(name(1)))
    for k in (2, 3):
        write_revision(location, name(k), name(k - 1), log_row(name(k)))
    head = 3
    env = project_env(database_url, MIGRATE_LOCK_TIMEOUT="200")
    failures: list[str] = []
    harness: list[str] = []
    lost = 0
    walls = []
    for n in range(1, total + 1):
        if n > 1:
            head += 1
            write_revision(location, name(head), name(head - 1), log_row(name(head)))
        new = [name(k) for k in range(1 if n == 1 else head, head + 1)]
        try:
            wall, lines, problems, broken = run_round(project, env, project / "logs" / f"round-{n}")
        except HarnessError as error:
            broken = str(error)
        if broken:
            # The round proves nothing either way; the next ones would start from its leftovers.
            harness.append(f"round {n}: {broken}")
            break
        walls.append(wall)
        counts = dict(rows(database_url, "SELECT revision, count(*) FROM revlog GROUP BY revision"))
        wrong = {r: counts.get(r, 0) for r in new if counts.get(r, 0) != 1}
        lost += len(wrong)
        migrators = [line for line in lines if not line.startswith("migration noop:")]
        expected = f"applied {len(new)} [{','.join(new)}]"
        checks = {
            f"a process failed:\n{problems}": bool(problems),
            f"revisions not applied exactly once: {wrong}": bool(wrong),
            f"{len(lines)} startup lines, not {STARTS}": len(lines) != STARTS,
            f"not exactly one migrator ({expected}): {migrators}": len(migrators) != 1
            or expected not in migrators[0],
            "database not at head": current_revisions(database_url) != {name(head)},
        }
        failures += [f"round {n}: {what}" for what, bad in checks.items() if bad]

    # The same work done by one process: a new revision, one command.
    single_wall = 0.0
    if not harness:
        head += 1
        write_revision(location, name(head), name(head - 1), log_row(name(head)))
        started = time.monotonic()
        single = spawn_cli("single", project, env, project / "logs")
        single.popen.wait(120)
        single_wall = time.monotonic() - started
        assert single.popen.returncode == 0, single.output()

    mean = sum(walls) / len(walls) if walls else 0.0
    record(
        "stampede: 16 processes (6 CLI, 9 uvicorn, 1 uvicorn --workers 4) per round",
        label,
        len(walls),
        len(failures),
        lost,
        note=f"round {mean:.1f}s mean vs {single_wall:.1f}s for one process",
        harness_errors=len(harness),
        round_seconds=round(mean, 2),
        single_seconds=round(single_wall, 2),
    )
    conclude(failures, harness)


BARRIER = """\
import os as _os, pathlib as _pathlib, time as _time

_pathlib.Path(_os.environ["FM_READY_DIR"], str(_os.getpid())).touch()
while not _pathlib.Path(_os.environ["FM_GO_FILE"]).exists():
    _time.sleep(0.005)
"""


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite", marks=pytest.mark.heavy),
        "postgresql",
        pytest.param("mariadb", marks=pytest.mark.heavy),
    ],
    indirect=True,
)
def test_control_plain_alembic_upgrade_in_16_processes_breaks(
    project: Path, database_url: str, backend: str
) -> None:
    """The trusted recipe under the same load: 16 ``alembic upgrade head`` (stock env.py, no
    lock) released at once from a barrier in env.py, on an empty database. Some fail, or a
    revision is applied twice: what the rounds above show fastapi-migrate never does."""
    location = write_migrations(project, 0, env="generic")
    ini = project / "alembic.ini"
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", database_url, 1))
    env_py = location / "env.py"
    env_py.write_text(BARRIER + env_py.read_text())
    add_revision(location, name(1), None, upgrade=CREATE_LOG + log_row(name(1)))
    for k in (2, 3):
        add_revision(location, name(k), name(k - 1), upgrade=log_row(name(k)))
    ready, go = project / "ready", project / "go"
    ready.mkdir()
    env = project_env(database_url, FM_READY_DIR=str(ready), FM_GO_FILE=str(go))
    procs = [
        spawn(
            f"alembic-{i}",
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            project,
            env,
            project / "logs",
        )
        for i in range(16)
    ]
    wait_for(lambda: len(list(ready.iterdir())) == len(procs), 120, "16 ready", procs)
    go.touch()
    for proc in procs:
        proc.popen.wait(120)
    failed = [p for p in procs if p.popen.returncode != 0]
    counts = dict(rows(database_url, "SELECT revision, count(*) FROM revlog GROUP BY revision"))
    twice = {r: n for r, n in counts.items() if n != 1}
    record(
        "control: plain `alembic upgrade head`, 16 processes released together",
        backend,
        1,
        len(failed),
        len(twice),
        note=f"{len(failed)} of 16 processes failed; revisions applied more than once: "
        f"{len(twice)}",
    )
    assert failed or twice, "16 unlocked alembic runs all succeeded, each revision once"
