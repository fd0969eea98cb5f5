"""Running ``fastapi-migrate`` as a user does: a real subprocess in the project folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .support import subprocess_env

MODULE = (sys.executable, "-m", "fastapi_migrate")


def console_script() -> str:
    """The installed ``fastapi-migrate`` entry point beside this interpreter."""
    found = shutil.which("fastapi-migrate", path=str(Path(sys.executable).parent))
    assert found, "the fastapi-migrate console script is not installed (pip install -e .)"
    return found


def cli(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    program: tuple[str, ...] = MODULE,
) -> subprocess.CompletedProcess[str]:
    """Run one command; its exit code and output, whatever they are."""
    return subprocess.run(
        [*program, *args],
        cwd=cwd,
        env=env if env is not None else subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The result, after asserting exit 0 (showing stderr when not)."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def fails(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Assert exit ``code`` and a one-line error (no traceback) naming ``words``; the line."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
