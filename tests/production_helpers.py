"""Helpers for the production tests: a small app file, another process that migrates."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2

APP = """\
from fastapi import FastAPI
from fastapi_migrate import health_router, migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())
app.include_router(health_router)


@app.get("/migration")
def migration() -> dict:
    r = app.state.migration
    return {"action": r.action, "from": r.from_revision, "to": r.to_revision,
            "applied": r.applied}
"""


def write_app(root: Path) -> None:
    """``app.py`` in ``root``: migrates on startup per the environment, serves the result."""
    (root / "app.py").write_text(APP)


def migrate_in_another_process(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What a release job does: run the startup logic once, in its own process."""
    return subprocess.run(
        [sys.executable, "-c", "from fastapi_migrate import migrate; migrate()"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_not_serving(port: int, proc: subprocess.Popen[str], seconds: float) -> None:
    """For ``seconds``: the process runs, and nothing answers on its port."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited: {proc.stdout.read() if proc.stdout else ''}"
        try:
            response = httpx2.get(f"http://127.0.0.1:{port}/health/migrations", timeout=1)
        except httpx2.TransportError:
            time.sleep(0.2)
            continue
        raise AssertionError(f"served while behind: {response.status_code} {response.text}")


class Output:
    """Everything a server prints, read as it comes (so a test can wait for a line)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(5)
                raise AssertionError(f"no {text!r} in: {''.join(self.lines)}")
            time.sleep(0.05)

    def stop(self) -> str:
        """Terminate the server; all it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return "".join(self.lines)
