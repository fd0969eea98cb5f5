"""Real faults for the tests of issue 22's points 9-12: a full filesystem, a server that never
answers, a server that asks for TLS, an app started under uvicorn that must fail."""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import listening_socket, start_uvicorn, stop

APP = """\
from fastapi import FastAPI
from fastapi_migrate import migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())


@app.get("/")
def root() -> dict[str, bool]:
    return {"ok": True}
"""


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "512k") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only), unmounted afterwards; skips
    the test where mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory: Path) -> None:
    """Write into ``directory`` until its filesystem has no byte left (ENOSPC)."""
    with open(directory / "filler", "ab", buffering=0) as handle:
        for size in (65536, 4096, 1):  # what a smaller write may still fit in the last page
            try:
                while handle.write(b"\0" * size):
                    pass
            except OSError as error:
                assert error.errno == errno.ENOSPC, error


class SilentServer:
    """A port on 127.0.0.1 that accepts TCP and never answers (a frozen server), counting the
    connections it accepted; kept for this process's life."""

    def __init__(self) -> None:
        self.sock = listening_socket()
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(client)  # held open, never read, never answered

    def reset(self) -> None:
        for client in self.accepted:
            client.close()
        self.accepted.clear()


_SILENT: list[SilentServer] = []


def silent_server() -> SilentServer:
    """The process's ``SilentServer``, its count reset."""
    if not _SILENT:
        _SILENT.append(SilentServer())
    _SILENT[0].reset()
    return _SILENT[0]


def silent_connections() -> int:
    """How many connections the ``SilentServer`` accepted since ``silent_server()``."""
    return len(_SILENT[0].accepted) if _SILENT else 0


def attempts_reported(line: str) -> int:
    """How many connection attempts a "cannot connect" line counts ("(2 attempts in 5.1s;")."""
    found = re.search(r"\((\d+) attempts? in ", line)
    assert found, line
    return int(found.group(1))


@contextlib.contextmanager
def tls_offering_server() -> Iterator[int]:
    """A port that answers PostgreSQL's SSLRequest with "S" (TLS, go ahead), so libpq loads
    the client's certificate and key files, as it does with a server that has ssl=on."""
    sock = listening_socket()
    stopping = threading.Event()
    sock.settimeout(0.2)

    def serve() -> None:
        while not stopping.is_set():
            try:
                client, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with client:
                client.settimeout(5)
                with contextlib.suppress(OSError):
                    client.recv(8)
                    client.sendall(b"S")
                    client.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stopping.set()
        thread.join(5)
        sock.close()


def uvicorn_start_fails(project: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Start ``uvicorn main:app`` (APP) in ``project``; assert it exits non-zero without ever
    answering; everything it printed."""
    (project / "main.py").write_text(APP)
    proc, port = start_uvicorn("main:app", project, env)
    answered = []
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if probe.recv(16):
                    answered.append(port)
        except OSError:
            pass
        time.sleep(0.2)
    output = stop(proc)
    assert proc.returncode not in (0, None), output
    assert answered == [], output
    return output
