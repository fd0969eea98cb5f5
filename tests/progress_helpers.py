"""Reading a running process's output as it comes, and a shorter progress interval for it."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from pathlib import Path

PROGRESS = ("applying ", "applied ", "still applying ", "waiting for the migration lock: ")


def without_progress(output: str) -> list[str]:
    """The lines of ``output`` other than the progress lines (``fastapi_migrate.progress``)."""
    return [line for line in output.splitlines() if not line.startswith(PROGRESS)]


def summary_line(output: str) -> str:
    """The CLI's last line: the result's summary, after the progress lines."""
    lines = without_progress(output)
    assert len(lines) == 1, output
    return lines[0]


# A revision that runs until the test creates its flag file: the test decides when it ends.
WAITS_FOR_FLAG = '''\
"""wait for flag"""
import time
from pathlib import Path

from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    if op.get_context().as_sql:  # the lint's offline run (MIGRATE_UNSAFE) reads it, never waits
        return
    deadline = time.monotonic() + 120
    while not Path({flag!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def downgrade():
    pass
'''


def add_waiting_revision(location: Path, revision: str, down: str | None, flag: Path) -> None:
    """A revision (doc "wait for flag") that ends once ``flag`` exists."""
    text = WAITS_FOR_FLAG.format(revision=revision, down=down, flag=str(flag))
    (location / "versions" / f"{revision}.py").write_text(text)


def short_progress(tmp_path: Path, seconds: float) -> str:
    """A PYTHONPATH whose ``sitecustomize`` sets ``PROGRESS_SECONDS`` to ``seconds`` in the
    child (a shorter clock for the periodic lines; the database and the processes are real)."""
    shim = tmp_path / "short_progress"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        f"import fastapi_migrate.foundation.progress as p\np.PROGRESS_SECONDS = {seconds!r}\n"
    )
    return os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])])


class Output:
    """The lines a process prints (stdout, stderr merged into it), read by a thread as they
    come, so that a test can wait for one while the process still runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Output:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._thread.join(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, part: str, timeout: float = 120) -> str:
        """The first line (from here on) containing ``part``; fails if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {part!r} within {timeout}s:\n{self.text()}") from None
            if line is None:
                self._new.put(None)
                raise AssertionError(f"the process ended without {part!r}:\n{self.text()}")
            self._lines.append(line)
            if part in line:
                return line

    def finish(self, timeout: float = 120) -> int:
        """Its exit code, once it ended and every line was read."""
        code = self.proc.wait(timeout)
        self._thread.join(30)
        while True:
            try:
                line = self._new.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self._lines.append(line)
        return code

    def lines(self) -> list[str]:
        return list(self._lines)

    def text(self) -> str:
        return "\n".join(self._lines)
