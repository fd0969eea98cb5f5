"""pytest plugin (registered through the ``pytest11`` entry point): a database at head per test.

The migrations run into a template database, kept between runs and rebuilt only when what
decides its schema changes; each test gets a copy of it (``migrated_database_url``; on a
server, usually one an earlier test used, proven back in a fresh copy's state) or a transaction
rolled back on one shared copy (``migrated_connection``), so a test's cost does not grow with the
number of revisions, and no test sees another's rows. Databases go to
``--migrate-db-url`` / ``MIGRATE_TEST_DATABASE_URL`` (a server:
the plugin creates and drops its own databases there), else to temporary SQLite files.

Every pytest run of a project with fastapi-migrate installed loads this module: it imports
SQLAlchemy and Alembic only when a fixture is used.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .foundation.lent import lend
from .testing.server_choice import (
    SERVER_URL_VARIABLE,
    server_url,
    server_url_option,
    set_server_url,
)
from .testing.server_errors import server_failure

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection

    from .foundation.settings import MigrateSettings
    from .testing.janitor import Janitor, MigratedTemplate
    from .testing.rollback import WorkerDatabase

_previous_url = pytest.StashKey[str | None]()
_run = pytest.StashKey[str]()
_failed = pytest.StashKey[bool]()
_kept = pytest.StashKey[list[tuple[str, str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastapi-migrate")
    group.addoption(
        "--migrate-db-url",
        default=None,
        metavar="URL",
        help="database server for migrated_database_url: the plugin creates and drops its own "
        f"databases there (default: ${SERVER_URL_VARIABLE}, else temporary SQLite files)",
    )
    group.addoption(
        "--migrate-rebuild",
        action="store_true",
        default=False,
        help="migrate the template again even if one kept from an earlier run matches the "
        "migrations (for what the key cannot see: env.py reading the environment...)",
    )
    group.addoption(
        "--migrate-keep-failed",
        action="store_true",
        default=False,
        help="keep the database of a failed test that used migrated_database_url (or "
        "migrated_engine) as the test left it, and print its URL; drop it by hand",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_previous_url] = server_url_option()
    # One id for the whole run, xdist workers included: --migrate-rebuild rebuilds once.
    worker_input = getattr(config, "workerinput", None)
    config.stash[_run] = worker_input["testrunuid"] if worker_input else uuid.uuid4().hex
    set_server_url(config.getoption("migrate_db_url", None))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember a failed setup or call: ``--migrate-keep-failed`` keeps that test's database."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[_failed] = True
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(_kept, [])
    if not kept:
        return
    terminalreporter.section("fastapi-migrate: databases of failed tests, kept")
    for nodeid, url in kept:
        terminalreporter.line(f"{nodeid}: {url}")


def pytest_unconfigure(config: pytest.Config) -> None:
    set_server_url(config.stash.get(_previous_url, None))  # an in-process pytester run ends


def pytest_report_header(config: pytest.Config) -> str | None:
    url = server_url()
    if not url:
        return None
    from .foundation.redaction import mask_url

    return f"fastapi-migrate: test databases on {mask_url(url)}"


@pytest.fixture(scope="session")
def migrate_settings() -> MigrateSettings:
    """The settings the template is migrated with; override it in a conftest to change them.

    By default the app's own: environment, ``.env`` and alembic.ini of the working directory.
    The database URL is the plugin's, never ``DATABASE_URL``.
    """
    from .foundation.settings import MigrateSettings, url_optional

    with url_optional():
        return MigrateSettings()


@pytest.fixture(scope="session")
def migrated_template(
    migrate_settings: MigrateSettings,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[MigratedTemplate]:
    """The project's database at head, kept between runs while its migrations are unchanged
    (built once by whichever process gets there first); tests get copies of it."""
    from .testing.janitor import Janitor, database_server

    # SQLite templates are kept in pytest's cache folder (a temporary one without it).
    cache = getattr(pytestconfig, "cache", None)
    folder = cache.mkdir("fastapi-migrate") if cache else tmp_path_factory.mktemp("fastapi-migrate")
    janitor: Janitor | None = None
    template: MigratedTemplate | None = None
    failure: str | None = None
    try:
        server = database_server(server_url(), Path(folder))
        janitor = Janitor(
            server,
            worker=os.environ.get("PYTEST_XDIST_WORKER", "main"),
            kept_list=Path(folder) / "kept-databases.txt",
        )
        template = janitor.kept_template(
            migrate_settings,
            run=pytestconfig.stash[_run],
            rebuild=bool(pytestconfig.getoption("migrate_rebuild", False)),
        )
    except Exception as error:
        if not server_url():
            raise  # SQLite files: no secret to hide, and the traceback helps
        failure = server_failure(error)
        if janitor is not None:
            _close_quietly(janitor)
    if failure is not None or template is None or janitor is None:
        # Out of the except block and without a traceback: the driver's frames hold the
        # password (its connect arguments, shown even without -l), this one holds none.
        pytest.fail(failure or "fastapi-migrate: no template", pytrace=False)
    try:
        yield template
    finally:
        janitor.close()


def _close_quietly(janitor: Janitor) -> None:
    """Close after a failure; the server already failed, its first error is the one to show."""
    with contextlib.suppress(Exception):
        janitor.close()


@pytest.fixture
def migrated_database_url(
    request: pytest.FixtureRequest, migrated_template: MigratedTemplate
) -> Iterator[str]:
    """The URL of a database at head in a fresh copy's state, this test's alone; after the test
    it is reset for a later one where the server can prove it (PostgreSQL, MariaDB), else
    dropped; with ``--migrate-keep-failed``, kept as a failed test left it."""
    keeping = bool(request.config.getoption("migrate_keep_failed", False))

    def failed() -> bool:  # asked after the test: its report is in by then
        return bool(request.node.stash.get(_failed, False))

    with migrated_template.copy(keep=failed if keeping else None) as url, lend(url):
        yield url
        if keeping and failed():
            from .foundation.redaction import mask_url

            kept = request.config.stash.setdefault(_kept, [])
            kept.append((request.node.nodeid, mask_url(url)))


@pytest.fixture(scope="session")
def migrated_session_database_url(migrated_template: MigratedTemplate) -> Iterator[str]:
    """The URL of a database at head shared by the whole session (this xdist worker's), for
    suites whose own fixtures are session- or module-scoped (a ``db`` fixture that seeds once,
    a module-wide ``TestClient``); what tests commit stays until the session ends. Lent to the
    app's lifespan for the session, as the function-scoped fixtures are for their test."""
    with migrated_template.copy() as url, lend(url):
        yield url


@pytest.fixture
def migrated_engine(migrated_database_url: str) -> Iterator[Engine]:
    """A (blocking) SQLAlchemy engine on ``migrated_database_url``, disposed after the test."""
    from sqlalchemy import create_engine

    from .backends.drivers import sync_url

    engine = create_engine(sync_url(migrated_database_url))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def migrated_worker_database(migrated_template: MigratedTemplate) -> Iterator[WorkerDatabase]:
    """The one copy of the template this worker's rollback fixtures share (made at first use)."""
    from .testing.rollback import WorkerDatabase

    shared = WorkerDatabase(migrated_template)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def migrated_connection(migrated_worker_database: WorkerDatabase) -> Iterator[Connection]:
    """A connection to a database at head, inside a transaction rolled back after the test.

    Bind sessions with ``Session(bind=connection, join_transaction_mode="create_savepoint")``:
    their commits become savepoints. A test whose writes escape the transaction (it commits the
    connection itself; DDL on MySQL/MariaDB) makes the next test get a fresh copy.
    """
    with migrated_worker_database.connection() as connection, lend(migrated_worker_database.url):
        yield connection


async def _async_connection(
    migrated_worker_database: WorkerDatabase,
) -> AsyncGenerator[AsyncConnection, None]:
    """The connection of ``migrated_async_connection``, lent to the app while the test runs."""
    async with migrated_worker_database.async_connection() as connection:
        with lend(migrated_worker_database.url):
            yield connection


@pytest.fixture
def migrated_async_connection(
    request: pytest.FixtureRequest, migrated_worker_database: WorkerDatabase
) -> Iterator[AsyncConnection]:
    """``migrated_connection`` for asyncio drivers (an ``AsyncConnection``), opened on the event
    loop the test runs on: anyio's (``@pytest.mark.anyio``) or pytest-asyncio's (strict or auto
    mode), both installed or either; needs an asyncio driver in the test server's URL
    (``sqlite+aiosqlite://``, ``postgresql+asyncpg://...``, ``mysql+aiomysql://...``).

    A plain fixture that drives the async one itself, so that neither plugin claims it for a
    loop of its own."""
    from .testing.event_loops import on_the_tests_loop

    yield from on_the_tests_loop(
        _async_connection, request, migrated_worker_database=migrated_worker_database
    )
