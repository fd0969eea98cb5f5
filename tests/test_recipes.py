"""The recipes of docs/testing.md for an app's own engine in tests (issue 23): each is a folder
in docs/examples/testing (an app and its conftest.py), run here by a real inner pytest on a
user's project, on SQLite, PostgreSQL and MariaDB; the guide includes each file as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from .plugin_helpers import PLUGIN, SERVERS
from .support import add_revision, to_async

pytest_plugins = ["pytester", "tests.plugin_fixtures"]

REPO = Path(__file__).parent.parent
RECIPES = REPO / "docs" / "examples" / "testing"
NAMES = ["get_db_override", "engine_at_import", "engine_in_lifespan", "async_session"]
ITEMS = """\
op.create_table(
    'items',
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('name', sa.String(50), nullable=False),
)"""


def _recipe_project(pytester: pytest.Pytester, root: Path, name: str, conftest: str) -> None:
    add_revision(
        root / "db" / "migrations", "r5", "r4", upgrade=ITEMS, downgrade="op.drop_table('items')"
    )
    (root / "app.py").write_text((RECIPES / name / "app.py").read_text())
    (root / "conftest.py").write_text(conftest)
    (root / "test_items.py").write_text((RECIPES / "test_items.py").read_text())


def _run(pytester: pytest.Pytester, backend: str, *, asyncio: bool) -> pytest.RunResult:
    args = ["-p", "anyio.pytest_plugin", "-p", PLUGIN, "-p", "no:cacheprovider", "-W", "error"]
    if backend == "sqlite":
        args += ["--migrate-db-url", "sqlite+aiosqlite://"] if asyncio else []
    else:
        from .conftest import require_backend

        require_backend(backend)
        args += ["--migrate-db-url", to_async(SERVERS[backend]) if asyncio else SERVERS[backend]]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        return pytester.runpytest_subprocess(*args)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
@pytest.mark.parametrize("name", NAMES)
def test_recipe(pytester: pytest.Pytester, user_project: Path, name: str, backend: str) -> None:
    """DATABASE_URL names an unreachable server and the engine-at-import app a dev.db file:
    the app's lifespan touching either would fail the run or leave the file behind."""
    _recipe_project(pytester, user_project, name, (RECIPES / name / "conftest.py").read_text())
    result = _run(pytester, backend, asyncio=name.startswith("async"))
    result.assert_outcomes(passed=2)
    assert not (user_project / "dev.db").exists()


def test_the_async_recipe_needs_expire_on_commit_false(
    pytester: pytest.Pytester, user_project: Path
) -> None:
    conftest = (RECIPES / "async_session" / "conftest.py").read_text()
    without = "".join(line for line in conftest.splitlines(True) if "expire_on_commit" not in line)
    assert without != conftest
    _recipe_project(pytester, user_project, "async_session", without)
    result = _run(pytester, "sqlite", asyncio=True)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*MissingGreenlet*"])


@pytest.mark.parametrize("name", NAMES)
def test_the_guide_includes_the_recipe_as_it_is(name: str) -> None:
    guide = (REPO / "docs" / "testing.md").read_text()
    for file in ("app.py", "conftest.py"):
        assert f'--8<-- "docs/examples/testing/{name}/{file}"' in guide, f"{name}/{file}"
