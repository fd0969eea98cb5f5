"""Shared parts of the reliability suite: a project whose migrations can be paused at a named
point (so a test can ``kill -9`` a real process exactly there), real CLI and uvicorn processes
logging to files, database-side probes, and the results table of ``docs/reliability.md``.

The pause points live in the project's own ``env.py`` and revision files, read from
``FM_TEST_PAUSE_AT``; the library knows nothing of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from .support import (
    TEMPLATES,
    HarnessError,
    harness_cause,
    listening_socket,
    popen,
    subprocess_env,
    uvicorn_args,
)

POINTS = ("waiting", "before_ddl", "mid_ddl", "between_revisions", "after_last")

PAUSE_MODULE = '''\
"""Test support: stop this process at a named point until the test resumes (or kills) it."""
import os
import time
from pathlib import Path


def pause(point):
    if os.environ.get("FM_TEST_PAUSE_AT") != point:
        return
    folder = Path(os.environ["FM_TEST_PAUSE_DIR"])
    (folder / "paused").write_text(f"{os.getpid()} {point}")
    deadline = time.monotonic() + 120
    while not (folder / "resume").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"paused at {point} and never resumed")
        time.sleep(0.02)
'''

# fastapi-migrate's own env.py, with three pause points around it: before any DDL (the lock is
# held), and once the migration connection is committed and returned (the lock is still held).
ENV_PY = """\
from sqlalchemy import event
from sqlalchemy.pool import Pool

from fastapi_migrate.alembic_env import run_migrations
from fm_pause import pause

pause("before_ddl")
run_migrations()


_seen = []


def _after_commit(*_args):
    if not _seen:
        _seen.append(True)
        pause("after_last")


event.listen(Pool, "checkin", _after_commit)
"""

APP_PY = """\
from fastapi import FastAPI
from fastapi_migrate import health_router, migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())
app.include_router(health_router)


@app.get("/migration")
def migration() -> dict:
    r = app.state.migration
    return {"action": r.action, "applied": r.applied}
"""


def write_project(root: Path) -> Path:
    """``migrations/`` with the pausing env.py (no revisions yet), ``fm_pause.py``, ``app.py``."""
    location = root / "migrations"
    (location / "versions").mkdir(parents=True)
    (location / "script.py.mako").write_text((TEMPLATES / "fastapi" / "script.py.mako").read_text())
    (location / "env.py").write_text(ENV_PY)
    (root / "fm_pause.py").write_text(PAUSE_MODULE)
    (root / "app.py").write_text(APP_PY)
    return location


def write_revision(location: Path, revision: str, down: str | None, body: str) -> None:
    """A revision whose ``upgrade()`` is ``body`` (``op``, ``sa``, ``pause`` and ``time`` in
    scope)."""
    text = textwrap.dedent(
        """\
        import time

        import sqlalchemy as sa
        from alembic import op

        from fm_pause import pause

        revision = {revision!r}
        down_revision = {down!r}
        branch_labels = None
        depends_on = None


        def upgrade():
            if op.get_context().as_sql:
                return  # the lint pre-check's offline rendering: no pause, no effect
        {body}


        def downgrade():
            pass
        """
    ).format(revision=revision, down=down, body=textwrap.indent(body, "    "))
    (location / "versions" / f"{revision}.py").write_text(text)


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process whose output goes to a file (no pipe to fill up with 16 of them)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    workers: int = 0  # uvicorn: how many lifespans it runs
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def harness_cause(self) -> str | None:
        """Why the harness, not the migration, failed this process (see ``harness_cause``)."""
        return harness_cause(self.output())

    def kill9(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(
    name: str,
    args: list[str],
    cwd: Path,
    env: dict[str, str],
    logs: Path,
    *,
    pass_fds: tuple[int, ...] = (),
    **extra: int,
) -> Proc:
    """Start a process logging to ``logs/NAME.log``; a name already used in ``logs`` is refused
    (one log per process, by construction), a process that cannot start is a ``HarnessError``."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    try:
        out = open(log, "xb")  # noqa: SIM115 (closed below, once the child has it)
    except FileExistsError as error:
        raise HarnessError(f"two processes named {name} in {logs}") from error
    with out:
        child = popen(
            name,
            args,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )
    return Proc(name, child, log, **extra)


def spawn_cli(name: str, cwd: Path, env: dict[str, str], logs: Path) -> Proc:
    return spawn(name, [sys.executable, "-m", "fastapi_migrate", "upgrade"], cwd, env, logs)


def spawn_uvicorn(name: str, cwd: Path, env: dict[str, str], logs: Path, workers: int = 1) -> Proc:
    """``uvicorn app:app`` (``--workers N`` if more than one) on a socket bound and listening
    before it starts, handed over with ``--fd``: no port to race for."""
    sock = listening_socket()
    try:
        fd = sock.fileno()
        extra = ["--workers", str(workers)] if workers > 1 else []
        return spawn(
            name,
            uvicorn_args("app:app", fd, *extra),
            cwd,
            env,
            logs,
            pass_fds=(fd,),
            port=int(sock.getsockname()[1]),
            workers=workers,
        )
    finally:
        sock.close()  # the child holds the socket now


def project_env(url: str, **extra: str) -> dict[str, str]:
    """Environment for a child in the project folder: its URL, fm_pause importable, and the
    round's MIGRATE_LOCK (``use_lock``) unless given."""
    lock = os.environ.get("FM_TEST_LOCK")
    if lock and "MIGRATE_LOCK" not in extra:
        extra = {"MIGRATE_LOCK": lock, **extra}
    env = subprocess_env(DATABASE_URL=url, PYTHONDONTWRITEBYTECODE="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path.cwd()), env.get("PYTHONPATH")) if p)
    return env


def wait_for(condition: object, timeout: float, what: str, procs: Iterable[Proc] = ()) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` with the processes' output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    outputs = "\n".join(f"--- {p.name} (exit {p.popen.poll()}):\n{p.output()}" for p in procs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{outputs}")


def wait_paused(folder: Path, proc: Proc, timeout: float = 60) -> None:
    def paused() -> bool:
        if proc.popen.poll() is not None:
            check_harness(proc)
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.output()}")
        return (folder / "paused").exists()

    wait_for(paused, timeout, f"{proc.name} to pause", [proc])


def check_harness(proc: Proc) -> None:
    """Raise ``HarnessError`` if ``proc``'s output shows that the harness failed it."""
    cause = proc.harness_cause()
    if cause:
        raise HarnessError(f"{proc.name} could not run: {cause}\n{proc.output()[-2000:]}")


def conclude(failures: list[str], harness: list[str]) -> None:
    """End a scenario: migration failures fail it (``AssertionError``, harness errors listed
    after them); harness errors alone raise ``HarnessError``, so the two never look alike."""
    if failures:
        raise AssertionError("\n".join(failures + [f"harness error: {h}" for h in harness]))
    if harness:
        raise HarnessError("\n".join(harness))


def summaries(text: str) -> list[str]:
    """The one line per start that fastapi-migrate logs: ``migration ACTION: ...``."""
    return [
        line[line.index("migration ") :]
        for line in text.splitlines()
        if "migration " in line and " applied " in line and line.strip()
    ]


# -- the database --------------------------------------------------------------------------------


def scalar(url: str, statement: str) -> object:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(statement).scalar()
    finally:
        engine.dispose()


def rows(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(statement)]
    finally:
        engine.dispose()


def connections_to(url: str) -> int:
    """Client sessions on this server database (PostgreSQL, MariaDB), this probe excluded."""
    parsed = sa.make_url(url)
    name = parsed.database
    if parsed.get_backend_name() == "postgresql":
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
            f"'{name}' AND pid <> pg_backend_pid()"
        )
    else:
        query = (
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = "
            f"'{name}' AND ID <> CONNECTION_ID()"
        )
    return int(scalar(url, query))  # type: ignore[call-overload]


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (the SQLite lock file: it is waiting)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


# -- rounds and the results table ----------------------------------------------------------------


def heavy(config: pytest.Config) -> bool:
    return bool(config.getoption("--heavy")) or os.environ.get("FM_HEAVY") == "1"


def rounds(config: pytest.Config, default: int, full: int) -> int:
    """``full`` rounds with ``--heavy`` (or FM_HEAVY=1; FM_HEAVY_ROUNDS=N for fewer while
    developing), else ``default`` (the CI run)."""
    if not heavy(config):
        return default
    return int(os.environ.get("FM_HEAVY_ROUNDS") or full)


LOCKS = pytest.mark.parametrize("lock", ["session", pytest.param("lease", marks=pytest.mark.heavy)])
"""Each reliability scenario with the default MIGRATE_LOCK=true (the session lock on these
servers) and, in the heavy run, MIGRATE_LOCK=lease."""


def use_lock(lock: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``project_env`` give children MIGRATE_LOCK=lease for a ``lease`` round (SQLite
    has its file lock only: skipped); the label for the results table."""
    if lock == "session":
        return backend
    if backend == "sqlite":
        pytest.skip("SQLite's lock is a file lock, whatever MIGRATE_LOCK says")
    monkeypatch.setenv("FM_TEST_LOCK", "lease")
    return f"{backend}, MIGRATE_LOCK=lease"


def record(
    scenario: str,
    database: str,
    runs: int,
    failures: int,
    data_lost: int,
    note: str = "",
    harness_errors: int = 0,
    **numbers: float,
) -> None:
    """Append one row to the results file named by ``FM_RELIABILITY_REPORT``, if any.

    ``failures`` counts what fastapi-migrate got wrong; ``harness_errors`` what the test's own
    machinery could not do (bind, spawn): rounds cut short by it are not counted in ``runs``."""
    target = os.environ.get("FM_RELIABILITY_REPORT")
    if not target:
        return
    row = {
        "scenario": scenario,
        "database": database,
        "runs": runs,
        "failures": failures,
        "data_lost": data_lost,
        "harness_errors": harness_errors,
        "note": note,
        **numbers,
    }
    with open(target, "a") as out:
        out.write(json.dumps(row) + "\n")
