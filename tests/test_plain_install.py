"""A plain install (``pip install "fastapi-migrate-on-startup[postgres]"``): SQLAlchemy 2.1 comes
without greenlet, which only the ``[async]`` extra brings. The package, the CLI, an app's
startup and its health route must work with a sync driver all the same.

The child processes run with greenlet made unimportable, as it is in such an install."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from .support import current_revisions, subprocess_env, table_names, write_migrations

_WITHOUT_GREENLET = """\
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "greenlet":
            raise ModuleNotFoundError("No module named 'greenlet'", name="greenlet")
        return None

sys.meta_path.insert(0, _NotInstalled())
"""

_APP = """\
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import health_router, migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())
app.include_router(health_router)
with TestClient(app) as client:
    health = client.get("/health/migrations")
try:
    import greenlet  # noqa: F401
    has_greenlet = True
except ImportError:
    has_greenlet = False
print(json.dumps({
    "action": app.state.migration.action,
    "health": [health.status_code, health.json()["status"]],
    "greenlet": has_greenlet,
}))
"""


def run(project: Path, code: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_GREENLET + textwrap.dedent(code)],
        cwd=project,
        env=subprocess_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_app_starts_and_answers_without_greenlet(project: Path, database_url: str) -> None:
    write_migrations(project, 2)

    child = run(project, "import json\n" + _APP, database_url)

    assert child.returncode == 0, child.stderr
    found = json.loads(child.stdout.strip().splitlines()[-1])
    assert found == {"action": "upgraded", "health": [200, "ok"], "greenlet": False}
    assert current_revisions(database_url) == {"r2"}
    assert {"t1", "t2"} <= table_names(database_url)


def test_the_command_line_works_without_greenlet(project: Path, database_url: str) -> None:
    write_migrations(project, 2)
    cli = (
        "import runpy\n"
        "sys.argv = ['fastapi-migrate', *{args!r}]\n"
        "runpy.run_module('fastapi_migrate', run_name='__main__')\n"
    )

    upgraded = run(project, cli.format(args=["upgrade"]), database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "r2" in upgraded.stdout
    current = run(project, cli.format(args=["current"]), database_url)
    assert current.returncode == 0, current.stderr
    assert "r2 (head)" in current.stdout
    assert current_revisions(database_url) == {"r2"}
