"""SPEC section 5: many migrators at once, killed migrators, lock timeouts; real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from fastapi_migrate import LockTimeout, MigrateSettings, MigrationResult, migrate

from .support import (
    ONLINE_ONLY,
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    subprocess_env,
    table_names,
    write_migrations,
)

# A child process: import everything, say READY, wait for the starting gun, migrate once.
CHILD = """\
import sys, time
from pathlib import Path
from fastapi_migrate import MigrateSettings, migrate

print("READY", flush=True)
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
result = migrate(MigrateSettings())
print("RESULT", result.action, ",".join(result.applied), flush=True)
"""


def logged_migrations(root: Path, count: int) -> Path:
    """r1..rN, each inserting its id into ``applied_log``: a double application shows there."""
    location = write_migrations(root, 0)
    add_revision(
        location,
        "r1",
        None,
        upgrade=(
            "op.create_table('applied_log', sa.Column('rev', sa.String(10)))\n"
            "op.execute(\"INSERT INTO applied_log (rev) VALUES ('r1')\")"
        ),
    )
    for k in range(2, count + 1):
        add_revision(
            location,
            f"r{k}",
            f"r{k - 1}",
            upgrade=(
                f"op.create_table('t{k}', sa.Column('id', sa.Integer, primary_key=True))\n"
                f"op.execute(\"INSERT INTO applied_log (rev) VALUES ('r{k}')\")"
            ),
        )
    return location


def applied_log(url: str) -> Counter[str]:
    return Counter(str(row[0]) for row in execute(url, "SELECT rev FROM applied_log")[0])


def start_child(project: Path, url: str, go: Path, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(go)],
        cwd=project,
        env=subprocess_env(DATABASE_URL=url, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


# N migrator processes forked from one that imported everything once (as gunicorn --preload
# does): N real processes, each with its own connections and Alembic globals, released at once.
SWARM = """\
import os, sys
from fastapi_migrate import MigrateSettings, migrate

gun_r, gun_w = os.pipe()
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        os.close(gun_w)
        os.read(gun_r, 1)  # returns for every child at once when the parent closes its end
        try:
            result = migrate(MigrateSettings())
            line, code = f"RESULT {os.getpid()} {result.action} {','.join(result.applied)}", 0
        except BaseException as error:
            line, code = f"ERROR {os.getpid()} {type(error).__name__}: {error}", 1
        os.write(1, (line + "\\n").encode())  # one write: lines of children never interleave
        os._exit(code)
    pids.append(pid)
os.close(gun_r)
os.close(gun_w)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
print("CODES", *codes, flush=True)
"""


def test_eight_processes_at_once_apply_each_revision_exactly_once(
    project: Path, database_url: str
) -> None:
    logged_migrations(project, 5)

    run = subprocess.run(
        [sys.executable, "-c", SWARM, "8"],
        cwd=project,
        env=subprocess_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )

    lines = [line.split() for line in run.stdout.splitlines()]
    assert run.returncode == 0 and ["CODES", *["0"] * 8] in lines, run.stdout + run.stderr
    results = [line[2:] for line in lines if line[0] == "RESULT"]
    assert len({line[1] for line in lines if line[0] == "RESULT"}) == 8  # eight processes
    assert sorted(r[0] for r in results) == ["noop"] * 7 + ["upgraded"], run.stdout
    assert [r[1] for r in results if r[0] == "upgraded"] == ["r1,r2,r3,r4,r5"]
    assert applied_log(database_url) == Counter({f"r{k}": 1 for k in range(1, 6)})
    assert current_revisions(database_url) == {"r5"}


def test_lock_timeout_names_the_holder_and_a_killed_holder_leaves_no_lock(
    project: Path, database_url: str, backend: str
) -> None:
    location = logged_migrations(project, 1)
    migrate(MigrateSettings(database_url=database_url))
    started = project / "r2-started"
    # Only the first run of r2 hangs (until it is killed); later runs go straight through.
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=(
            "import time\n"
            "from pathlib import Path\n"
            f"marker = Path({str(started)!r})\n"
            "if not marker.exists():\n"
            "    marker.touch()\n"
            "    time.sleep(60)\n"
            "op.execute(\"INSERT INTO applied_log (rev) VALUES ('r2')\")"
        ),
    )
    add_revision(location, "r3", "r2", table="t3")
    go = project / "go"
    go.touch()
    holder = start_child(project, database_url, go)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert holder.poll() is None, holder.communicate()[0]
            assert time.monotonic() < deadline, "the first migrator never reached r2"
            time.sleep(0.02)

        with pytest.raises(LockTimeout) as caught:
            migrate(MigrateSettings(database_url=database_url, lock_timeout=1))
        message = str(caught.value)
        assert "more than 1s" in message
        assert "held by" in message, message
        if backend == "sqlite":
            assert f"pid {holder.pid}" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    assert holder.returncode == -signal.SIGKILL

    # A stale lock would make this wait the full lock_timeout and fail.
    result = migrate(MigrateSettings(database_url=database_url, lock_timeout=10))

    assert (result.action, result.from_revision, result.applied) == ("upgraded", "r1", ["r2", "r3"])
    assert applied_log(database_url) == Counter({"r1": 1, "r2": 1})
    assert current_revisions(database_url) == {"r3"}
    assert "t3" in table_names(database_url)


def _serialized_migrations(root: Path, trace: Path) -> None:
    """Three revisions that record when they start and end, and in which thread."""
    location = write_migrations(root, 0)
    for k in range(1, 4):
        add_revision(
            location,
            f"r{k}",
            f"r{k - 1}" if k > 1 else None,
            upgrade=ONLINE_ONLY
            + (
                "import threading, time\n"
                f"with open({str(trace)!r}, 'a') as f:\n"
                "    f.write(f'{threading.get_ident()} start\\n')\n"
                "time.sleep(0.05)\n"
                f"op.create_table('t{k}', sa.Column('id', sa.Integer, primary_key=True))\n"
                f"with open({str(trace)!r}, 'a') as f:\n"
                "    f.write(f'{threading.get_ident()} end\\n')"
            ),
        )


def _in_threads(*settings: MigrateSettings) -> list[MigrationResult | BaseException]:
    barrier = threading.Barrier(len(settings))
    results: list[MigrationResult | BaseException] = [RuntimeError("not run")] * len(settings)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = migrate(settings[index])
        except BaseException as error:  # reported by the test, not lost in the thread
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(settings))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _assert_no_overlap(trace: Path) -> None:
    lines = [line.split() for line in trace.read_text().splitlines()]
    assert len(lines) % 2 == 0, lines
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert (start[1], end[1], start[0]) == ("start", "end", end[0]), lines


def test_two_threads_on_one_database_migrate_once(project: Path, database_url: str) -> None:
    trace = project / "trace.txt"
    _serialized_migrations(project, trace)
    settings = MigrateSettings(database_url=database_url)

    results = _in_threads(settings, settings)

    actions = sorted(r.action if isinstance(r, MigrationResult) else repr(r) for r in results)
    assert actions == ["noop", "upgraded"]
    _assert_no_overlap(trace)
    assert len(trace.read_text().splitlines()) == 6
    assert current_revisions(database_url) == {"r3"}


def test_two_threads_on_two_databases_never_overlap_inside_alembic(
    project: Path, database_url: str, backend: str, tmp_path: Path
) -> None:
    trace = project / "trace.txt"
    _serialized_migrations(project, trace)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    with fresh_database(backend, other_dir) as other_url:
        results = _in_threads(
            MigrateSettings(database_url=database_url), MigrateSettings(database_url=other_url)
        )
        assert [r.action if isinstance(r, MigrationResult) else repr(r) for r in results] == [
            "upgraded",
            "upgraded",
        ]
        assert current_revisions(other_url) == {"r3"}
    assert current_revisions(database_url) == {"r3"}
    _assert_no_overlap(trace)
    assert len(trace.read_text().splitlines()) == 12
