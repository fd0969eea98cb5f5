"""An unreachable or misconfigured database: clear errors, and never a password anywhere."""

from __future__ import annotations

import logging
import re
import socket
import threading
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import (
    ConfigurationError,
    DatabaseUnavailable,
    MigrateSettings,
    MigrationError,
    MigrationFailed,
    migrate,
    migrate_on_startup,
)

from .conftest import require_backend
from .support import (
    MARIADB_SERVER,
    add_revision,
    current_revisions,
    refused_port,
    unique_name,
    write_migrations,
)


def _secret() -> str:
    return f"s3cret-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger (SQLAlchemy's and Alembic's too), down to DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_hidden(secret: str, error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """Not in the message, the repr, the printed traceback with its chain, nor any log record."""
    texts = {
        "str": str(error),
        "repr": repr(error),
        "traceback": "".join(traceback.format_exception(error)),
        "log": caplog.text,
        "records": "\n".join(r.getMessage() for r in caplog.records),
    }
    for where, text in texts.items():
        assert secret not in text, f"password in {where}: {text}"


CLOSED_PORT_URLS = {
    "psycopg": "postgresql+psycopg://app:{pw}@127.0.0.1:{port}/x",
    "asyncpg": "postgresql+asyncpg://app:{pw}@127.0.0.1:{port}/x",
    "pymysql": "mysql+pymysql://app:{pw}@127.0.0.1:{port}/x",
    "aiomysql": "mysql+aiomysql://app:{pw}@127.0.0.1:{port}/x",
}


@pytest.mark.parametrize("driver", list(CLOSED_PORT_URLS))
def test_unreachable_database_is_retried_then_unavailable_without_the_password(
    project: Path, driver: str, caplog_all: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 1)
    secret = _secret()
    url = CLOSED_PORT_URLS[driver].format(pw=secret, port=refused_port())
    settings = MigrateSettings(database_url=url, connect_timeout=2)

    with pytest.raises(DatabaseUnavailable) as caught:
        migrate(settings)

    message = str(caught.value)
    attempts = re.search(r"\((\d+) attempts in (\d+\.\d)s", message)
    assert attempts is not None and int(attempts[1]) >= 2, message  # retried (load may slow it)
    assert float(attempts[2]) >= 1.9, message  # kept trying for all of connect_timeout
    assert "app:***@127.0.0.1" in message
    assert "MIGRATE_CONNECT_TIMEOUT=2" in message
    assert secret not in repr(settings) and secret not in str(settings)
    assert_hidden(secret, caught.value, caplog_all)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose server accepts TCP connections (the kernel's backlog) but never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


@pytest.mark.parametrize("driver", list(CLOSED_PORT_URLS))
def test_a_server_that_never_answers_is_unavailable_after_connect_timeout(
    project: Path, driver: str, silent_server: int, caplog_all: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 1)
    secret = _secret()
    url = CLOSED_PORT_URLS[driver].format(pw=secret, port=silent_server)
    outcome: list[BaseException] = []

    def start() -> None:
        try:
            migrate(MigrateSettings(database_url=url, connect_timeout=1))
        except BaseException as error:  # handed to the test below
            outcome.append(error)

    # A driver waiting for the server's greeting with no timeout would hang the start forever.
    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(30)

    assert not thread.is_alive(), "the start hung on a server that never answers"
    assert [type(e) for e in outcome] == [DatabaseUnavailable], outcome
    assert "cannot connect to" in str(outcome[0])
    assert_hidden(secret, outcome[0], caplog_all)


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_connect_timeout_never_cuts_a_long_statement(
    project: Path, database_url: str, backend: str
) -> None:
    location = write_migrations(project, 0)
    sleep = "SELECT pg_sleep(2.5)" if backend == "postgresql" else "SELECT SLEEP(2.5)"
    add_revision(location, "r1", None, upgrade=f"op.execute({sleep!r})")

    result = migrate(MigrateSettings(database_url=database_url, connect_timeout=1))

    assert result.applied == ["r1"]


def test_lifespan_logs_one_error_without_the_password(
    project: Path, caplog_all: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 1)
    secret = _secret()
    url = f"postgresql+psycopg://app:{secret}@127.0.0.1:{refused_port()}/x"
    app = FastAPI(lifespan=migrate_on_startup(database_url=url, connect_timeout=0.5))

    with pytest.raises(DatabaseUnavailable) as caught, TestClient(app):
        pass

    errors = [r for r in caplog_all.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["fastapi_migrate"]
    assert "cannot connect to postgresql+psycopg://app:***@" in errors[0].getMessage()
    assert_hidden(secret, caught.value, caplog_all)


@pytest.mark.parametrize(
    "url",
    [
        "app:{pw}@db.example/x",  # the scheme forgotten
        "postgresql+psycopg://app:{pw}@127.0.0.1:notaport/x",
        "postgresql+nosuchdriver://app:{pw}@127.0.0.1/x",
    ],
    ids=["no-scheme", "bad-port", "unknown-driver"],
)
def test_bad_url_is_a_configuration_error_without_the_password(
    project: Path, url: str, caplog_all: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 1)
    secret = _secret()
    settings = MigrateSettings(database_url=url.format(pw=secret))
    assert secret not in repr(settings) and secret not in str(settings)

    with pytest.raises(ConfigurationError, match="DATABASE_URL") as caught:
        migrate(settings)

    assert "app:***@" in str(caught.value)
    assert_hidden(secret, caught.value, caplog_all)


@pytest.fixture
def mariadb_user() -> Iterator[tuple[str, str]]:
    """A MariaDB account with a password and its own database: (url, password)."""
    require_backend("mariadb")
    name = unique_name("fm_pw")
    secret = _secret()
    admin = sa.create_engine(
        MARIADB_SERVER, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
        conn.exec_driver_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY '{secret}'")
        conn.exec_driver_sql(f"GRANT ALL ON {name}.* TO '{name}'@'%%'")
    url = sa.make_url(MARIADB_SERVER).set(username=name, password=secret, database=name)
    try:
        yield url.render_as_string(hide_password=False), secret
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP USER '{name}'@'%%'")
            conn.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


def test_wrong_password_fails_at_once_without_either_password(
    project: Path, mariadb_user: tuple[str, str], caplog_all: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 1)
    url, secret = mariadb_user
    wrong = _secret()
    wrong_url = sa.make_url(url).set(password=wrong).render_as_string(hide_password=False)

    with pytest.raises(DatabaseUnavailable) as caught:
        migrate(MigrateSettings(database_url=wrong_url, connect_timeout=30))

    message = str(caught.value)
    assert "(1 attempt in" in message  # a refused password is not retried for 30 s
    assert "Access denied" in message
    assert_hidden(wrong, caught.value, caplog_all)
    assert_hidden(secret, caught.value, caplog_all)
    # The same account with its right password migrates: the failure was the password.
    assert migrate(MigrateSettings(database_url=url)).applied == ["r1"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_failing_revision_that_prints_the_url_does_not_leak_it(
    project: Path, database_url: str, caplog_all: pytest.LogCaptureFixture
) -> None:
    location = write_migrations(project, 1)
    secret = _secret()
    # The server trusts local connections, so the password is carried but not checked.
    url = sa.make_url(database_url).set(password=secret).render_as_string(hide_password=False)
    migrate(MigrateSettings(database_url=url))
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=(
            "url = op.get_bind().engine.url.render_as_string(hide_password=False)\n"
            "raise RuntimeError(f'cannot copy rows from {url}')"
        ),
    )

    with pytest.raises(MigrationFailed) as caught:
        migrate(MigrateSettings(database_url=url))

    assert caught.value.revision == "r2"
    assert "cannot copy rows from postgresql+psycopg://postgres:***@" in str(caught.value)
    # The revision's own frame still shows in the traceback: the cause is kept, redacted.
    printed = "".join(traceback.format_exception(caught.value))
    assert "r2.py" in printed
    assert_hidden(secret, caught.value, caplog_all)
    assert current_revisions(database_url) == {"r1"}


def test_every_error_is_a_migration_error() -> None:
    for error in (ConfigurationError, DatabaseUnavailable, MigrationFailed):
        assert issubclass(error, MigrationError)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_refusals_on_a_reachable_database_hide_the_password(
    project: Path, database_url: str, caplog_all: pytest.LogCaptureFixture
) -> None:
    """The server accepts any password here (trust auth), so these paths run with one: a lock
    held by another session, and a database the scripts cannot handle, through the lifespan."""
    from fastapi_migrate import LockTimeout, UnknownRevision
    from fastapi_migrate.backends.postgresql import advisory_key

    location = write_migrations(project, 1)
    secret = _secret()
    url = sa.make_url(database_url).set(password=secret).render_as_string(hide_password=False)
    holder = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with holder.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(None, "alembic_version")}
            )
            with pytest.raises(LockTimeout) as timed_out:
                migrate(MigrateSettings(database_url=url, lock_timeout=0.5))
    finally:
        holder.dispose()
    assert "held by PostgreSQL backend pid" in str(timed_out.value)
    assert_hidden(secret, timed_out.value, caplog_all)

    migrate(MigrateSettings(database_url=url))
    (location / "versions" / "r1.py").rename(location / "versions" / "r1.py.gone")
    add_revision(location, "r0", None, table="t0")
    app = FastAPI(lifespan=migrate_on_startup(database_url=url))
    with pytest.raises(UnknownRevision) as unknown, TestClient(app):
        pass
    assert "the database is at revision r1" in str(unknown.value)
    assert_hidden(secret, unknown.value, caplog_all)


def test_settings_come_from_a_dotenv_file_and_a_missing_url_is_named(
    project: Path, tmp_path: Path
) -> None:
    write_migrations(project, 1)
    with pytest.raises(ConfigurationError, match="DATABASE_URL: no database URL; set DATABASE_URL"):
        MigrateSettings()
    app = FastAPI(lifespan=migrate_on_startup())
    with pytest.raises(ConfigurationError, match="DATABASE_URL: no database URL"), TestClient(app):
        pass

    url = f"sqlite:///{tmp_path / 'from-dotenv.sqlite'}"
    (project / ".env").write_text(f"DATABASE_URL={url}\nMIGRATE_LOCK_TIMEOUT=7\n")
    settings = MigrateSettings()
    assert (settings.database_url, settings.lock_timeout) == (url, 7.0)
    with TestClient(FastAPI(lifespan=migrate_on_startup())) as client:
        assert client.app.state.migration.applied == ["r1"]  # type: ignore[attr-defined]
    assert current_revisions(url) == {"r1"}
