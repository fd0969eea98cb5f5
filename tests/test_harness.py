"""The harness itself: servers get a socket already listening, and when the harness (not the
migration) fails a process, it says so with its cause, as a ``HarnessError``."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest

from .reliability_helpers import check_harness, conclude, project_env, spawn, wait_for
from .support import (
    HarnessError,
    harness_cause,
    popen,
    refused_port,
    start_uvicorn,
    stop,
    subprocess_env,
    unique_name,
    uvicorn_args,
    wait_http,
)

APP = """\
import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict[str, int]:
    return {"pid": os.getpid()}
"""


def test_uvicorn_with_workers_serves_on_the_socket_it_was_handed(project: Path) -> None:
    (project / "app.py").write_text(APP)
    proc, port = start_uvicorn("app:app", project, subprocess_env(), "--workers", "2")
    try:
        assert wait_http(port, "/", proc) == 200
        pids: set[int] = set()

        def both_answered() -> bool:
            pids.add(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()["pid"])
            return len(pids) == 2

        wait_for(both_answered, 60, "both workers to answer")
    finally:
        output = stop(proc)
    assert "Uvicorn running on socket ('127.0.0.1'" in output, output


def test_a_process_that_cannot_be_spawned_is_a_harness_error(project: Path) -> None:
    missing = str(project / "no-such-program")
    with pytest.raises(HarnessError, match=r"could not spawn ghost .*No such file"):
        popen("ghost", [missing])
    with pytest.raises(HarnessError, match="could not spawn ghost"):
        spawn("ghost", [missing], project, subprocess_env(), project / "logs")
    with pytest.raises(HarnessError, match="two processes named ghost"):
        spawn("ghost", [sys.executable, "-c", "pass"], project, subprocess_env(), project / "logs")


def test_a_server_the_harness_broke_is_a_harness_error_not_a_failure(project: Path) -> None:
    """uvicorn handed a descriptor that is not open: its output names the cause."""
    (project / "app.py").write_text(APP)
    unused = socket.socket()
    fd = unused.fileno()
    unused.close()  # the number is not open in the child either
    proc = spawn(
        "broken", uvicorn_args("app:app", fd), project, project_env("sqlite://"), project / "logs"
    )
    proc.popen.wait(60)
    assert harness_cause(proc.output()), proc.output()
    with pytest.raises(HarnessError, match=r"broken could not run: .*Bad file descriptor"):
        check_harness(proc)


def test_conclude_keeps_harness_errors_apart_from_failures() -> None:
    conclude([], [])
    with pytest.raises(HarnessError, match="round 2: could not bind"):
        conclude([], ["round 2: could not bind"])
    with pytest.raises(AssertionError, match=r"round 1: lost(.|\n)*harness error: round 2"):
        conclude(["round 1: lost"], ["round 2: could not bind"])
    assert harness_cause("ERROR: [Errno 98] Address already in use") is not None
    assert harness_cause("migration failed: DuplicateTable") is None


def test_a_refused_port_refuses_and_names_are_unique() -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused_port()), timeout=5)
    assert refused_port() == refused_port()
    names = {unique_name("fm_test") for _ in range(1000)}
    assert len(names) == 1000
