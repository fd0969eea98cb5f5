"""Templates kept between runs: a real inner pytest, run again and again on one project, as a
developer does; on SQLite (pytest's cache folder), PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_backend
from .plugin_helpers import PLUGIN, SERVERS, kept_templates, run_inner
from .support import add_revision

pytest_plugins = ["pytester", "tests.plugin_fixtures"]

# Each test records the template it got and whether this process migrated it; then checks that
# its own database is at head with the tables the revisions make.
RECORDING_TESTS = """\
import os

import pytest
import sqlalchemy as sa


@pytest.mark.parametrize("k", range(2))
def test_at_head(migrated_template, migrated_engine, k):
    built = "built" if migrated_template.result is not None else "kept"
    with open("runs.txt", "a") as f:
        f.write(f"{os.environ.get('RUN', '?')} {migrated_template.name} {built}\\n")
    expected = os.environ["EXPECT_HEAD"]
    with migrated_engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM fm_versions")).scalars().all() == [
            expected
        ]
        assert sa.inspect(c).has_table("t5") == (expected == "r5")
"""


@pytest.fixture(autouse=True)
def recording_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_recording=RECORDING_TESTS)


def _runs(root: Path, run: str) -> set[tuple[str, str]]:
    """(template name, built or kept) as the tests of run ``run`` recorded them."""
    lines = (root / "runs.txt").read_text().splitlines()
    return {(w[1], w[2]) for w in (line.split() for line in lines) if w[0] == run}


def _run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    run: str,
    head: str,
    args: list[str],
) -> set[tuple[str, str]]:
    monkeypatch.setenv("RUN", run)
    monkeypatch.setenv("EXPECT_HEAD", head)
    run_inner(pytester, *args).assert_outcomes(passed=2)
    return _runs(pytester.path, run)


def _templates_on(backend: str, root: Path, server_args: list[str]) -> set[str]:
    """The project's kept templates, looked up where they live."""
    return kept_templates(root, server_args[1] if server_args else None)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_rerun_migrates_only_when_the_migrations_change(
    pytester: pytest.Pytester, user_project: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    args = []
    if backend != "sqlite":
        require_backend(backend)
        args = ["--migrate-db-url", SERVERS[backend]]
    first = _run(pytester, monkeypatch, "1", "r4", args)
    assert len(first) == 1
    ((name, how),) = first
    assert how == "built"

    assert _run(pytester, monkeypatch, "2", "r4", args) == {(name, "kept")}

    # An added revision: another template, built; the old one dropped.
    location = user_project / "db" / "migrations"
    add_revision(location, "r5", "r4", table="t5")
    third = _run(pytester, monkeypatch, "3", "r5", args)
    ((name5, how5),) = third
    assert how5 == "built" and name5 != name
    assert _templates_on(backend, user_project, args) == {name5}

    # An edited revision (same revision id, other contents): rebuilt.
    revision = location / "versions" / "r5.py"
    revision.write_text(revision.read_text().replace("String(50)", "String(60)"))
    ((name5b, how5b),) = _run(pytester, monkeypatch, "4", "r5", args)
    assert how5b == "built" and name5b not in {name, name5}

    # --migrate-rebuild: built again under the same name, once.
    assert _run(pytester, monkeypatch, "5", "r5", [*args, "--migrate-rebuild"]) == {
        (name5b, "built")
    }
    assert _run(pytester, monkeypatch, "6", "r5", args) == {(name5b, "kept")}

    # A removed revision: back to the first schema, built again (its template was dropped).
    revision.unlink()
    assert _run(pytester, monkeypatch, "7", "r4", args) == {(name, "built")}
    assert _templates_on(backend, user_project, args) == {name}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_xdist_workers_and_concurrent_runs_build_it_once(
    pytester: pytest.Pytester, user_project: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    args = []
    if backend != "sqlite":
        require_backend(backend)
        args = ["--migrate-db-url", SERVERS[backend]]
    monkeypatch.setenv("EXPECT_HEAD", "r4")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    command = [sys.executable, "-m", "pytest", "-p", "xdist.plugin", "-p", PLUGIN, *args]
    runs = [
        subprocess.Popen(
            [*command, "-n", "2"],
            cwd=user_project,
            env={**os.environ, "RUN": str(k)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    for run in runs:
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, out
    recorded = _runs(user_project, "0") | _runs(user_project, "1")
    assert len({name for name, _ in recorded}) == 1
    lines = (user_project / "runs.txt").read_text().splitlines()
    assert sum(line.endswith(" built") for line in lines) == 1  # 2 runs x 2 workers, 1 build

    # --migrate-rebuild under xdist: its two workers rebuild it once.
    lines_before = len(lines)
    monkeypatch.setenv("RUN", "2")
    run_inner(pytester, "-n", "2", "--migrate-rebuild", *args).assert_outcomes(passed=2)
    new = (user_project / "runs.txt").read_text().splitlines()[lines_before:]
    assert sum(line.endswith(" built") for line in new) == 1


KILLING_REVISION = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_build_killed_half_way_is_never_used_and_is_cleaned(
    pytester: pytest.Pytester, user_project: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    args = []
    if backend != "sqlite":
        require_backend(backend)
        args = ["--migrate-db-url", SERVERS[backend]]
    location = user_project / "db" / "migrations"
    add_revision(
        location,
        "r5",
        "r4",
        upgrade=f"op.create_table('t5', sa.Column('id', sa.Integer))\n{KILLING_REVISION}",
    )
    monkeypatch.setenv("EXPECT_HEAD", "r5")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    killed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", PLUGIN, *args],
        cwd=user_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stdout
    assert _templates_on(backend, user_project, args) == set()  # nothing published

    revision = location / "versions" / "r5.py"
    revision.write_text(
        revision.read_text().replace("os.kill(os.getpid(), signal.SIGKILL)", "pass")
    )
    ((name, how),) = _run(pytester, monkeypatch, "2", "r5", args)
    assert how == "built"
    if backend == "sqlite":
        left = {p.stem for p in user_project.rglob("fmpt_*.sqlite")}
    else:
        from fastapi_migrate.testing.janitor import database_server, is_stale

        server = database_server(args[1], user_project)
        try:
            left = {n for n in server.names() if is_stale(n) or n.startswith("fmpt_tpl_")}
        finally:
            server.close()
    assert {n for n in left if "_build" in n} == set()  # the dead build, dropped
    assert name in left
