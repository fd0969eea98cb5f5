"""Faults met at the edges (issue 22, points 9 and 11): a TLS key file libpq refuses to use,
and SIGTERM while a revision runs under uvicorn. Real processes, real signals, real files."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .cli_helpers import cli, fails
from .fault_helpers import APP, tls_offering_server
from .support import (
    add_revision,
    current_revisions,
    start_uvicorn,
    stop,
    subprocess_env,
    table_names,
    write_migrations,
)


def _client_certificate(home: Path) -> None:
    """~/.postgresql/postgresql.crt and .key as libpq looks for them, the key readable by the
    group and others: libpq refuses to use it (as it refuses a key it cannot read)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = home / ".postgresql"
    folder.mkdir(parents=True)
    key, certificate = str(folder / "postgresql.key"), str(folder / "postgresql.crt")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=app", "-keyout", key, "-out", certificate),
        ],
        check=True,
        capture_output=True,
    )
    (folder / "postgresql.key").chmod(0o644)


def test_a_key_file_the_driver_refuses_fails_at_once(project: Path, tmp_path: Path) -> None:
    """As a container running as another user with HOME unchanged: the key under HOME cannot
    be used. Waiting will not change that: one attempt, not MIGRATE_CONNECT_TIMEOUT's worth."""
    write_migrations(project, 1)
    home = tmp_path / "home"
    _client_certificate(home)
    with tls_offering_server() as port:
        env = subprocess_env(
            DATABASE_URL=f"postgresql+psycopg://app@127.0.0.1:{port}/x",
            MIGRATE_CONNECT_TIMEOUT="60",
            HOME=str(home),
        )
        line = fails(
            cli(project, "upgrade", env=env),
            1,
            "cannot connect to",
            "(1 attempt in",
            "private key file",
            "postgresql.key",
        )
    assert line.startswith("fastapi-migrate: error: "), line


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, stop(proc)
        assert time.monotonic() < deadline, f"{path} never appeared:\n{stop(proc)}"
        time.sleep(0.05)


def _answers(port: int) -> bool:
    """Whether anything answers an HTTP request on the port within a second."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            probe.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return bool(probe.recv(16))
    except OSError:
        return False


def test_sigterm_while_a_revision_runs_commits_it_and_never_reports_ready(
    project: Path, tmp_path: Path
) -> None:
    location = write_migrations(project, 1)
    running, release = tmp_path / "running", tmp_path / "release"
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=(
            "import pathlib, time\n"
            "op.create_table('t2', sa.Column('id', sa.Integer, primary_key=True))\n"
            f"pathlib.Path({str(running)!r}).write_text('r2')\n"
            "deadline = time.monotonic() + 60\n"
            f"while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:\n"
            "    time.sleep(0.05)\n"
        ),
    )
    url = f"sqlite:///{project / 'app.db'}"
    (project / "main.py").write_text(APP)
    proc, port = start_uvicorn("main:app", project, subprocess_env(DATABASE_URL=url))
    try:
        _wait_for(running, proc)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signal is handled at once; the revision goes on
        assert proc.poll() is None
        release.write_text("go")
        answered = []
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(port):
                answered.append(port)
    finally:
        output = stop(proc)

    assert proc.returncode == 3, (proc.returncode, output)  # uvicorn's "startup failed"
    assert answered == [], output
    assert "SIGTERM received while migrating: the migration finished" in output, output
    assert "the app will not start" in output
    assert "Application startup complete" not in output, output
    assert "Uvicorn running on" not in output, output
    # The revision that was running finished and committed: the database is at r2, with t2.
    assert current_revisions(url) == {"r2"}
    assert "t2" in table_names(url)
