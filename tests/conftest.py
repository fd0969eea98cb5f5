"""Backends for the suite: SQLite always; PostgreSQL and MariaDB when their servers answer.

With CI=true a backend that cannot be reached fails the test instead of skipping it: CI never
passes with a backend silently left out.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import MARIADB_SERVER, PG_SERVER, fresh_database, server_problem

# pytester (used by the plugin's tests, even with runpytest_subprocess) restores sys.modules
# after each of its tests, dropping the modules first imported during it: a driver imported
# there for the first time is imported anew later, while its compiled part keeps raising the
# first import's exception classes, which SQLAlchemy then does not recognise (a raw
# psycopg.OperationalError escaped a later test). Imported once here, the drivers stay.
for _driver in ("psycopg", "pymysql", "asyncpg", "aiosqlite", "aiomysql"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_driver)

BACKENDS = ["sqlite", "postgresql", "mariadb"]
_SERVERS = {"postgresql": PG_SERVER, "mariadb": MARIADB_SERVER}


@functools.cache
def _problem(backend: str) -> str | None:
    return None if backend == "sqlite" else server_problem(_SERVERS[backend])


def require_backend(backend: str) -> None:
    """Skip (fail on CI) when the backend's server cannot be reached."""
    problem = _problem(backend)
    if problem is None:
        return
    skip_unless_ci(
        f"{backend} server not reachable ({problem}); set TEST_POSTGRES_URL/TEST_MARIADB_URL"
    )


def skip_unless_ci(message: str) -> None:
    """Skip with ``message``; under CI=true fail instead: CI never passes with a part left out."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--heavy",
        action="store_true",
        help="run the @pytest.mark.heavy tests (full reliability rounds); also FM_HEAVY=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip heavy tests unless asked for: the default run (CI's) stays fast."""
    if config.getoption("--heavy") or os.environ.get("FM_HEAVY") == "1":
        return
    skip = pytest.mark.skip(reason="heavy: run with --heavy or FM_HEAVY=1")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per database."""
    name: str = request.param
    require_backend(name)
    return name


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database on the backend (sync driver URL), dropped after the test."""
    with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory, with no MIGRATE_* from outside."""
    for name in list(os.environ):
        if name.startswith("MIGRATE_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root
