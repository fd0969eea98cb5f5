"""The examples of the docs (docs/examples), run as a user runs them: the app started, the
project's own tests run by pytest in a subprocess, on SQLite, PostgreSQL and MariaDB where the
example applies. The pages include these files as they are (tests/test_docs.py checks it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpcore2
import httpx2
import pytest

from .cli_helpers import cli, console_script, ok
from .plugin_helpers import PLUGIN, SERVERS
from .support import (
    TEMPLATES,
    add_revision,
    current_revisions,
    execute,
    start_uvicorn,
    stop,
    subprocess_env,
    write_migrations,
)

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def copy_example(name: str, to: Path) -> None:
    """The example folder's files into the project folder ``to``."""
    shutil.copytree(EXAMPLES / name, to, dirs_exist_ok=True)


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("MIGRATE_", "PYTEST_XDIST")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def server_url(backend: str) -> str | None:
    """The server the inner pytest makes its databases on; None for SQLite files."""
    if backend == "sqlite":
        return None
    from .conftest import require_backend

    require_backend(backend)
    return SERVERS[backend]


def inner_pytest(pytester: pytest.Pytester, backend: str, *args: str) -> pytest.RunResult:
    """``python -m pytest`` in the project, with only this plugin (and anyio) loaded."""
    server = server_url(backend)
    options = ["-p", "anyio.pytest_plugin", "-p", PLUGIN, "-p", "no:cacheprovider", "-W", "error"]
    options += ["--migrate-db-url", server] if server else []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        return pytester.runpytest_subprocess(*options, *args)


# -- getting started -----------------------------------------------------------------------------


def test_getting_started(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, database_url: str, backend: str
) -> None:
    """docs/getting-started.md, step by step: models.py, main.py and .env in an empty folder;
    ``fastapi-migrate init``; ``revision --autogenerate``; uvicorn migrates and serves, and
    starts again with nothing to do; the project's tests pass."""
    clean_environment(monkeypatch)
    project = pytester.path
    copy_example("getting_started", project)
    script = (console_script(),)
    # The page's .env names a SQLite file; DATABASE_URL in the environment wins over it.
    env = subprocess_env() if backend == "sqlite" else subprocess_env(DATABASE_URL=database_url)
    url = f"sqlite:///{project / 'notes.db'}" if backend == "sqlite" else database_url

    ok(cli(project, "init", env=env, program=script))
    ok(cli(project, "revision", "--autogenerate", "-m", "notes", env=env, program=script))
    (revision,) = (project / "migrations" / "versions").glob("*_notes.py")
    assert "op.create_table('notes'" in revision.read_text()

    proc, port = start_uvicorn("main:app", project, env)
    try:
        assert wait_for(port, "/health/migrations", proc) == 200
        base = f"http://127.0.0.1:{port}"
        assert (
            httpx2.post(f"{base}/notes", params={"text": "buy milk"}, timeout=30).status_code == 201
        )
        assert httpx2.get(f"{base}/notes", timeout=30).json() == ["buy milk"]
    finally:
        output = stop(proc)
    assert "migration upgraded" in output, output
    assert current_revisions(url) == {revision.name.split("_")[0]}

    proc, port = start_uvicorn("main:app", project, env)
    try:
        assert wait_for(port, "/notes", proc) == 200
    finally:
        output = stop(proc)
    assert "migration noop" in output, output

    inner_pytest(pytester, backend, "tests").assert_outcomes(passed=2)


def wait_for(port: int, path: str, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    """Poll ``path`` until the server answers; its status. A request sent before the app is up
    waits in the socket's backlog, longer than one read timeout on a busy machine: retried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {stop(proc)}")
        try:
            return httpx2.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code
        except (httpx2.TransportError, httpcore2.TimeoutException, httpcore2.NetworkError):
            time.sleep(0.1)
    raise AssertionError(f"server on port {port} did not answer {path} within {timeout}s")


def serve(project: Path, app: str, env: dict[str, str], path: str, *args: str) -> str:
    """``uvicorn app`` in the project until ``path`` answers 200; everything it printed."""
    proc, port = start_uvicorn(app, project, env, *args)
    try:
        assert wait_for(port, path, proc) == 200
    finally:
        output = stop(proc)
    return output


def migrations_folder(project: Path, folder: str = "migrations") -> Path:
    """What ``fastapi-migrate init`` writes, without its README."""
    location = project / folder
    (location / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(TEMPLATES / "fastapi" / name, location / name)
    return location


USERS = """\
op.create_table(
    'users',
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('email', sa.String(100), nullable=False, unique=True),
)"""


# -- the one line --------------------------------------------------------------------------------


def test_the_one_line(project: Path, database_url: str) -> None:
    copy_example("one_line", project)
    write_migrations(project, 2)
    output = serve(project, "main:app", subprocess_env(DATABASE_URL=database_url), "/docs")
    assert "migration upgraded" in output, output
    assert current_revisions(database_url) == {"r2"}


# -- settings and your env.py ----------------------------------------------------------------------


def settings_project(project: Path) -> None:
    """docs/examples/settings (the app's settings, main.py, an env.py of its own) with the
    getting started models and one revision."""
    copy_example("settings", project)
    shutil.copy(EXAMPLES / "getting_started" / "models.py", project)
    shutil.copy(TEMPLATES / "fastapi" / "script.py.mako", project / "migrations")
    (project / "migrations" / "versions").mkdir()
    add_revision(project / "migrations", "r1", None, table="notes")


def test_the_apps_own_settings_and_env_py(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, database_url: str, backend: str
) -> None:
    """The URL handed over once, from the app's own settings; its own env.py takes the
    connection handed to it: the start migrates that database, a test's database is the test's
    alone, and dev.db (the settings' default) is never made."""
    clean_environment(monkeypatch)
    project = pytester.path
    settings_project(project)
    env = subprocess_env(SQLALCHEMY_DATABASE_URI=database_url)
    output = serve(project, "main:app", env, "/docs")
    assert "migration upgraded" in output, output
    assert current_revisions(database_url) == {"r1"}

    inner_pytest(pytester, backend, "test_app.py").assert_outcomes(passed=1)
    assert not (project / "dev.db").exists()


def test_an_env_py_that_ignores_the_connection_is_refused(project: Path) -> None:
    """Without ``config.attributes.get("connection") or``, that env.py migrates the settings'
    database, not the one asked for: refused, naming both, before anything is written."""
    settings_project(project)
    env_py = project / "migrations" / "env.py"
    text = env_py.read_text()
    assert 'config.attributes.get("connection") or ' in text
    env_py.write_text(text.replace('config.attributes.get("connection") or ', ""))
    asked = f"sqlite:///{project / 'asked.db'}"
    env = subprocess_env(DATABASE_URL=asked, SQLALCHEMY_DATABASE_URI="sqlite:///dev.db")
    result = cli(project, "upgrade", env=env)
    assert result.returncode == 2, result.stderr
    assert "dev.db" in result.stderr and "asked.db" in result.stderr, result.stderr
    assert current_revisions(asked) == set()


# -- deploying -----------------------------------------------------------------------------------


def test_health_router_and_seed_with_two_workers(project: Path, database_url: str) -> None:
    """health.py under ``uvicorn --workers 2``, seeding with initial_data:seed: both workers
    start, the probe answers ok, one user, also after a second start."""
    copy_example("deploying", project)
    add_revision(migrations_folder(project), "u1", None, upgrade=USERS)
    env = subprocess_env(DATABASE_URL=database_url, MIGRATE_SEED="initial_data:seed")
    for _ in range(2):
        proc, port = start_uvicorn("health:app", project, env, "--workers", "2")
        try:
            assert wait_for(port, "/health/migrations", proc) == 200
            answer = httpx2.get(f"http://127.0.0.1:{port}/health/migrations", timeout=30)
            assert answer.json() == {"status": "ok", "current": "u1", "head": "u1"}
        finally:
            stop(proc)
    assert execute(database_url, "SELECT email FROM users") == [[("admin@example.com",)]]


# -- several trees, autocommit blocks, lint ------------------------------------------------------


def tree_package(project: Path, package: str | None, revision: str, table: str) -> None:
    """A package (or the app, for None) shipping its own migrations, one revision."""
    root = project / package if package else project
    if package:
        root.mkdir()
        (root / "__init__.py").write_text("")
    add_revision(migrations_folder(root), revision, None, table=table)


def test_several_trees(project: Path, database_url: str) -> None:
    copy_example("trees", project)
    tree_package(project, "auth", "a1", "auth_users")
    tree_package(project, "billing", "b1", "billing_invoices")
    tree_package(project, None, "n1", "notes")
    output = serve(project, "main:app", subprocess_env(DATABASE_URL=database_url), "/docs")
    assert "(trees: auth upgraded [a1]; billing upgraded [b1]; app upgraded [n1])" in output
    assert current_revisions(database_url, "auth_version") == {"a1"}
    assert current_revisions(database_url, "billing_version") == {"b1"}
    assert current_revisions(database_url) == {"n1"}
    output = serve(project, "main:app", subprocess_env(DATABASE_URL=database_url), "/docs")
    assert "migration noop" in output, output


def autocommit_project(project: Path) -> Path:
    location = migrations_folder(project)
    for revision in (EXAMPLES / "autocommit" / "versions").glob("*.py"):
        shutil.copy(revision, location / "versions")
    return location


@pytest.mark.parametrize("backend", ["postgresql"])
def test_autocommit_block(project: Path, database_url: str) -> None:
    """PostgreSQL: the enum value and CREATE INDEX CONCURRENTLY in autocommit_block(), the
    UPDATE after it in a transaction again; the index is valid."""
    autocommit_project(project)
    ok(cli(project, "upgrade", env=subprocess_env(DATABASE_URL=database_url)))
    assert execute(
        database_url,
        "SELECT name, mood::text FROM items ORDER BY id",
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'ix_items_name'",
    ) == [[("fine wine", "ok"), ("rain", "bad")], [(True,)]]
    ok(cli(project, "downgrade", "base", env=subprocess_env(DATABASE_URL=database_url)))


@pytest.mark.parametrize("backend", ["postgresql"])
def test_lint_and_its_suppression_comment(project: Path, database_url: str) -> None:
    """``fastapi-migrate lint 0002:head`` on the revision with its allow comment: no finding;
    without the comment, the rule it names."""
    location = autocommit_project(project)
    shutil.copy(EXAMPLES / "lint" / "versions" / "0003_mood_index.py", location / "versions")
    env = subprocess_env(DATABASE_URL=database_url)
    ok(cli(project, "lint", "0002:head", env=env))
    revision = location / "versions" / "0003_mood_index.py"
    revision.write_text(
        "".join(line for line in revision.read_text().splitlines(True) if "allow" not in line)
    )
    result = cli(project, "lint", "0002:head", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "require-concurrent-index-creation" in result.stdout


# -- testing your app ----------------------------------------------------------------------------


def test_first_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    clean_environment(monkeypatch)
    copy_example("testing/first_tests", pytester.path)
    add_revision(
        migrations_folder(pytester.path), "u1", None, upgrade=USERS.replace(", unique=True", "")
    )
    inner_pytest(pytester, backend).assert_outcomes(passed=3)


def test_session_scoped_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The session-scoped db fixture seeds once and commits; the module-wide client; the
    developer's database (SQLALCHEMY_DATABASE_URI's dev.db) is never made."""
    clean_environment(monkeypatch)
    copy_example("testing/session_scoped", pytester.path)
    shutil.copy(EXAMPLES / "deploying" / "models.py", pytester.path)
    add_revision(migrations_folder(pytester.path), "u1", None, upgrade=USERS)
    inner_pytest(pytester, backend).assert_outcomes(passed=2)
    assert not (pytester.path / "dev.db").exists()


def test_checks_for_your_migrations(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The assert_* checks on the getting started models and a revision that matches them; a
    revision whose downgrade forgets its table fails the check that says so."""
    clean_environment(monkeypatch)
    copy_example("testing/checks", pytester.path)
    shutil.copy(EXAMPLES / "getting_started" / "models.py", pytester.path)
    location = migrations_folder(pytester.path)
    add_revision(location, "n1", None, upgrade=NOTES, downgrade="op.drop_table('notes')")
    monkeypatch.setenv("MIGRATE_METADATA", "models:Base.metadata")
    inner_pytest(pytester, backend).assert_outcomes(passed=1)

    add_revision(location, "n2", "n1", table="scratch")
    (location / "versions" / "n2.py").write_text(
        (location / "versions" / "n2.py").read_text().replace("op.drop_table('scratch')", "pass")
    )
    result = inner_pytest(pytester, backend)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*scratch*"])


NOTES = """\
op.create_table(
    'notes',
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('text', sa.String(200), nullable=False),
)"""
