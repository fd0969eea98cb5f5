"""Bad input, each with its clear error, its exit code, and the database left as it was.

Every case runs ``fastapi-migrate upgrade`` (the startup logic of the app) as a real process
against a PostgreSQL database that is at r1 with a row in t1, then checks that the database
still has exactly the same tables, version and rows. Password masking in these errors is
tests/test_safety.py's subject (and tests/test_properties.py's); here it is the clarity of the
message, the exit code and that nothing was touched.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import ConfigurationError, MigrateSettings, migrate, migrate_on_startup
from fastapi_migrate.backends.drivers import missing_driver_hint

from .cli_helpers import cli, fails
from .conftest import require_backend
from .fault_helpers import (
    attempts_reported,
    fill,
    silent_connections,
    silent_server,
    small_filesystem,
    uvicorn_start_fails,
)
from .support import (
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    start_uvicorn,
    stop,
    subprocess_env,
    table_names,
    unique_name,
    wait_http,
    write_migrations,
)

Snapshot = tuple[set[str], list[tuple[object, ...]], list[tuple[object, ...]]]


def snapshot(url: str) -> Snapshot:
    """Tables, version rows and t1's rows: what 'untouched' compares."""
    tables = table_names(url)
    version = execute(url, "SELECT version_num FROM alembic_version")[0]
    return tables, version, execute(url, "SELECT id, name FROM t1 ORDER BY id")[0]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


@dataclass
class Case:
    """``change`` breaks the project or the environment; the CLI must exit ``code`` with one
    line on stderr that contains every one of ``words``."""

    code: int
    words: tuple[str, ...]
    change: Callable[[Path, dict[str, str]], None] = lambda _project, _env: None
    url: Callable[[str], str] = field(default=lambda url: url)


def _url(env: dict[str, str], value: str) -> None:
    env["DATABASE_URL"] = value


def _versions(project: Path) -> Path:
    return project / "migrations" / "versions"


CASES = {
    "malformed-url": Case(
        2,
        ("DATABASE_URL:", "is not a database URL", "expected e.g. postgresql+psycopg://"),
        url=lambda url: url.replace("://", "//", 1),
    ),
    "unknown-driver": Case(
        2,
        ("DATABASE_URL:", "SQLAlchemy does not read postgres://", "write postgresql+psycopg://"),
        url=lambda url: url.replace("postgresql+psycopg://", "postgres://"),
    ),
    "driver-not-installed": Case(
        2,
        ("the driver for 'postgresql+pg8000' is not installed", "pip install"),
        url=lambda url: url.replace("+psycopg", "+pg8000"),
    ),
    "raw-@-in-the-password": Case(
        2,
        ("DATABASE_URL:", "postgres:***@", "holds a raw '@'", "as %40"),
        url=lambda url: url.replace("postgres@", "postgres:s3cr@t-Zq7@"),
    ),
    "missing-database": Case(
        1,
        ("cannot connect to", "(1 attempt in", "does not exist"),
        url=lambda url: str(sa.make_url(url).set(database=unique_name("fm_missing"))),
    ),
    "missing-script-folder": Case(
        2,
        ("migration scripts in 'nowhere'", "MIGRATE_SCRIPT_LOCATION", "fastapi-migrate init"),
        lambda _p, env: env.update(MIGRATE_SCRIPT_LOCATION="nowhere"),
    ),
    "syntax-error-in-a-revision": Case(
        2,
        ("r2.py, line", "invalid syntax"),
        lambda p, _env: add_revision(_versions(p).parent, "r2", "r1", upgrade="def broken(:"),
    ),
    "missing-down-revision": Case(
        2,
        ("Revision r9 referenced from r9 -> r2", "a down_revision names a revision"),
        lambda p, _env: add_revision(_versions(p).parent, "r2", "r9", table="t2"),
    ),
    "cycle": Case(
        2,
        ("Cycle is detected in revisions", "r1", "r2"),
        lambda p, _env: (
            add_revision(_versions(p).parent, "r2", "r1", table="t2"),
            edit(_versions(p) / "r1.py", "down_revision = None", "down_revision = 'r2'"),
        ),
    ),
    "several-heads": Case(
        1,
        ("several heads (", "merge them", "MIGRATE_TARGET=heads"),
        lambda p, _env: (
            add_revision(_versions(p).parent, "r2", "r1", table="t2"),
            add_revision(_versions(p).parent, "r3", "r1", table="t3"),
        ),
    ),
    "unknown-target": Case(
        2,
        ("MIGRATE_TARGET: No such revision or branch 'r7'",),
        lambda _p, env: env.update(MIGRATE_TARGET="r7"),
    ),
    "database-at-an-unknown-revision": Case(
        1,
        ("the database is at revision r1", "the migration scripts do not know"),
        lambda p, _env: (_versions(p) / "r1.py").rename(_versions(p) / "r1.py.gone"),
    ),
    "create_all-with-empty-metadata": Case(
        2,
        ("MIGRATE_EMPTY_DATABASE=create_all: the metadata has no tables",),
        lambda p, env: (
            (p / "models.py").write_text("import sqlalchemy as sa\nmetadata = sa.MetaData()\n"),
            env.update(MIGRATE_EMPTY_DATABASE="create_all", MIGRATE_METADATA="models:metadata"),
        ),
    ),
    "setting-of-the-wrong-type": Case(
        2,
        ("invalid settings: MIGRATE_LOCK_TIMEOUT:", "(got 'soon')"),
        lambda _p, env: env.update(MIGRATE_LOCK_TIMEOUT="soon"),
    ),
    "version-table-not-an-identifier": Case(
        2,
        ("MIGRATE_VERSION_TABLE:", "is not a plain SQL identifier"),
        lambda _p, env: env.update(MIGRATE_VERSION_TABLE="versions; DROP TABLE t1"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_bad_input_is_one_clear_error_and_touches_nothing(
    project: Path, database_url: str, case: str
) -> None:
    write_migrations(project, 1)
    migrate(MigrateSettings(database_url=database_url))
    execute(database_url, "INSERT INTO t1 (id, name) VALUES (1, 'kept')")
    before = snapshot(database_url)
    spec = CASES[case]
    env = subprocess_env(DATABASE_URL=spec.url(database_url))
    spec.change(project, env)

    line = fails(cli(project, "upgrade", env=env), spec.code, *spec.words)

    assert line.startswith("fastapi-migrate: error: "), line
    assert "Zq7" not in line
    assert snapshot(database_url) == before


# -- issue 22, points 5 to 8: empty variables, the start's one line, configuration that is
# exit 2 naming its variable, identifiers, URLs. One block: the CLI and uvicorn, each row on the
# backends where it applies.


@dataclass
class SettingCase:
    """``env`` (project, database URL) gives the variables that break the start; the CLI
    exits ``code`` with one line holding ``words``, and uvicorn logs the same words in its
    ``migration failed, the app will not start:`` line."""

    backends: tuple[str, ...]
    words: tuple[str, ...]
    env: Callable[[Path, str], dict[str, str]]
    code: int = 2


def _long(length: int) -> str:
    return ("v" * length)[:length]


SETTING_CASES = {
    "config-path-as-given": SettingCase(
        ("sqlite",),
        ("MIGRATE_CONFIG: not a file", "(got 'conf/')"),
        lambda _p, _u: {"MIGRATE_CONFIG": "conf/"},
    ),
    "config-name-too-long": SettingCase(
        ("sqlite",),
        ("MIGRATE_CONFIG: cannot be read: File name too long",),
        lambda _p, _u: {"MIGRATE_CONFIG": _long(300)},
    ),
    "mode-misspelt": SettingCase(
        ("sqlite",),
        ("MIGRATE_MODE: Input should be 'upgrade'", "(got 'upgarde')"),
        lambda _p, _u: {"MIGRATE_MODE": "upgarde"},
    ),
    "script-location-with-percent": SettingCase(
        ("sqlite",),
        ("migration scripts in '100%'", "MIGRATE_SCRIPT_LOCATION"),
        lambda _p, _u: {"MIGRATE_SCRIPT_LOCATION": "100%"},
    ),
    "script-location-no-such-package": SettingCase(
        ("sqlite",),
        ("migration scripts in 'nosuchpkg:migrations'", "nosuchpkg", "MIGRATE_SCRIPT_LOCATION"),
        lambda _p, _u: {"MIGRATE_SCRIPT_LOCATION": "nosuchpkg:migrations"},
    ),
    "version-table-schema-missing": SettingCase(
        ("sqlite", "postgresql", "mariadb"),
        ("MIGRATE_VERSION_TABLE_SCHEMA: the database has no schema 'nosuch'",),
        lambda _p, _u: {"MIGRATE_VERSION_TABLE_SCHEMA": "nosuch"},
    ),
    "pymysql-charset-unknown": SettingCase(
        ("mariadb",),
        ("DATABASE_URL: ?charset=nosuch is not a character set",),
        lambda _p, url: {"DATABASE_URL": f"{url}?charset=nosuch"},
    ),
    "lock-timeout-out-of-range": SettingCase(
        ("sqlite",),
        ("MIGRATE_LOCK_TIMEOUT: Input should be less than or equal to 31536000",),
        lambda _p, _u: {"MIGRATE_LOCK_TIMEOUT": "1e10"},
    ),
    "ddl-lock-timeout-out-of-range": SettingCase(
        ("postgresql",),
        ("MIGRATE_DDL_LOCK_TIMEOUT: Input should be less than or equal to 2147483",),
        lambda _p, _u: {"MIGRATE_DDL_LOCK_TIMEOUT": "2147484"},
    ),
    "connect-timeout-out-of-range": SettingCase(
        ("mariadb",),
        ("MIGRATE_CONNECT_TIMEOUT: Input should be less than or equal to 31536000",),
        lambda _p, _u: {"MIGRATE_CONNECT_TIMEOUT": "31536001"},
    ),
    "version-table-trailing-newline": SettingCase(
        ("sqlite",),
        ("MIGRATE_VERSION_TABLE:", "is not a plain SQL identifier"),
        lambda _p, _u: {"MIGRATE_VERSION_TABLE": "alembic_version\n"},
    ),
    "version-table-control-character": SettingCase(
        ("sqlite",),
        ("MIGRATE_VERSION_TABLE:", "is not a plain SQL identifier"),
        lambda _p, _u: {"MIGRATE_VERSION_TABLE": "alembic\tversion"},
    ),
    "version-table-too-long-for-postgresql": SettingCase(
        ("postgresql",),
        ("MIGRATE_VERSION_TABLE:", "has 60 characters; at most 59 work"),
        lambda _p, _u: {"MIGRATE_VERSION_TABLE": _long(60)},
    ),
    "version-table-too-long-for-mariadb": SettingCase(
        ("mariadb",),
        ("MIGRATE_VERSION_TABLE:", "has 61 characters; at most 60 work"),
        lambda _p, _u: {"MIGRATE_VERSION_TABLE": _long(61)},
    ),
    "sqlite-url-with-two-slashes": SettingCase(
        ("sqlite",),
        ("DATABASE_URL: sqlite://app.db is not a SQLite URL", "write sqlite:///app.db"),
        lambda _p, _u: {"DATABASE_URL": "sqlite://app.db"},
    ),
    "postgres-scheme": SettingCase(
        ("postgresql",),
        ("SQLAlchemy does not read postgres://", "write postgresql+psycopg://"),
        lambda _p, url: {"DATABASE_URL": url.replace("postgresql+psycopg://", "postgres://")},
    ),
}
SETTING_ROWS = [(c, b) for c, spec in SETTING_CASES.items() for b in spec.backends]
START_LINE = "migration failed, the app will not start: "
APP = (
    "from fastapi import FastAPI\nfrom fastapi_migrate import migrate_on_startup\n"
    "app = FastAPI(lifespan=migrate_on_startup())\n"
)


def _uvicorn_start_line(project: Path, env: dict[str, str]) -> str:
    """Start uvicorn on the app; it must exit; the line it logged, after asserting it is the
    first error it printed."""
    (project / "app.py").write_text(APP)
    proc, _port = start_uvicorn("app:app", project, env)
    try:
        proc.wait(120)
    finally:
        output = stop(proc)
    assert proc.returncode != 0, output
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert errors and START_LINE in errors[0], output
    return errors[0]


@pytest.mark.parametrize(("case", "backend"), SETTING_ROWS, indirect=["backend"])
def test_bad_settings_are_exit_2_naming_the_variable_cli_and_uvicorn(
    project: Path, database_url: str, case: str
) -> None:
    spec = SETTING_CASES[case]
    write_migrations(project, 1)
    migrate(MigrateSettings(database_url=database_url))
    execute(database_url, "INSERT INTO t1 (id, name) VALUES (1, 'kept')")
    before = snapshot(database_url)
    env = subprocess_env(DATABASE_URL=database_url)
    env.update(spec.env(project, database_url))

    line = fails(cli(project, "upgrade", env=env), spec.code, *spec.words)
    assert line.startswith("fastapi-migrate: error: "), line
    logged = _uvicorn_start_line(project, env)
    for word in spec.words:
        assert word in logged, logged

    assert snapshot(database_url) == before
    assert not (project / "app.db").exists()  # sqlite://app.db: no file made by mistake


def test_an_empty_variable_means_unset_cli_and_uvicorn(project: Path, tmp_path: Path) -> None:
    """As docker compose and Kubernetes write an unset value: every MIGRATE_* and DATABASE_URL
    empty, the URL from alembic.ini, the defaults for the rest."""
    write_migrations(project, 2)
    database = tmp_path / "app.sqlite"
    (project / "alembic.ini").write_text(
        f"[alembic]\nscript_location = migrations\nsqlalchemy.url = sqlite:///{database}\n"
    )
    empty = {name: "" for name in ("DATABASE_URL", "MIGRATE_DATABASE_URL")}
    empty |= {f"MIGRATE_{field.upper()}": "" for field in MigrateSettings.model_fields}
    env = subprocess_env(**empty)
    result = cli(project, "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert current_revisions(f"sqlite:///{database}") == {"r2"}

    (project / "app.py").write_text(APP)
    proc, port = start_uvicorn("app:app", project, env)
    try:
        assert wait_http(port, "/docs", proc, timeout=60) == 200
    finally:
        output = stop(proc)
    assert START_LINE not in output, output


def test_a_start_failing_with_an_error_that_is_no_migration_error_logs_the_line_first(
    project: Path, tmp_path: Path
) -> None:
    """Another process holds the SQLite file under ``BEGIN EXCLUSIVE`` for the whole start:
    whatever the start raises, the one line comes first."""
    write_migrations(project, 1)
    database = tmp_path / "app.sqlite"
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("CREATE TABLE other (id INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        env = subprocess_env(DATABASE_URL=f"sqlite:///{database}", MIGRATE_LOCK_TIMEOUT="1")
        _uvicorn_start_line(project, env)
    finally:
        holder.close()


def test_plain_postgresql_without_psycopg2_says_what_to_write() -> None:
    """SQLAlchemy 2.0 reads ``postgresql://`` as psycopg2, which the ``postgres`` extra does not
    install (psycopg 3 does); 2.1 reads it as psycopg 3, and this hint is never needed."""
    url = sa.make_url("postgresql://app:Zq7-secret@db/notes")
    hint = missing_driver_hint(url, "psycopg2")
    assert "write postgresql+psycopg://" in hint, hint
    assert "postgresql+psycopg://app:***@db/notes" in hint, hint
    assert "Zq7" not in hint
    assert missing_driver_hint(url.set(drivername="postgresql+pg8000"), "pg8000") == ""


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("MIGRATE_MODE", "sometimes", "MIGRATE_MODE: Input should be 'upgrade', 'wait'"),
        ("MIGRATE_CONNECT_TIMEOUT", "-1", "MIGRATE_CONNECT_TIMEOUT: Input should be greater"),
        ("MIGRATE_EMPTY_DATABASE", "drop", "MIGRATE_EMPTY_DATABASE: Input should be"),
    ],
)
def test_a_bad_setting_stops_the_app_before_it_connects(
    project: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    """Through the app's lifespan (the CLI's ``upgrade`` forces MIGRATE_MODE=upgrade)."""
    write_migrations(project, 1)
    database = project / "app.sqlite"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv(variable, value)
    app = FastAPI(lifespan=migrate_on_startup())
    with pytest.raises(ConfigurationError, match="invalid settings") as caught, TestClient(app):
        pass
    assert words in str(caught.value)
    assert not database.exists()


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_wrong_password_exits_1_at_once_and_touches_nothing(
    project: Path, database_url: str
) -> None:
    """A refused password is not retried for MIGRATE_CONNECT_TIMEOUT: exit 1 at once."""
    write_migrations(project, 1)
    user = unique_name("fm_bad")
    name = sa.make_url(database_url).database
    execute(
        database_url,
        f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'right-{user}'",
        f"GRANT ALL ON {name}.* TO '{user}'@'%%'",
    )
    try:
        wrong = sa.make_url(database_url).set(username=user, password="wrong")
        env = subprocess_env(
            DATABASE_URL=wrong.render_as_string(hide_password=False),
            MIGRATE_CONNECT_TIMEOUT="60",
        )
        line = fails(cli(project, "upgrade", env=env), 1, "(1 attempt in", "Access denied")
        assert "wrong" not in line
        assert table_names(database_url) == set()
    finally:
        execute(database_url, f"DROP USER '{user}'@'%%'")


# -- issue 22, points 9-10b: local faults, through the CLI and through uvicorn -----------------
# Each row fails at once with one line naming the cause, and leaves nothing behind: no retry of
# what waiting cannot fix, no empty database file, no half-written backup under a real name.


@dataclass
class Fault:
    """``arrange(project, tmp_path, url)`` sets the fault up and returns the environment;
    ``left(project, tmp_path)`` lists what must not be there afterwards."""

    backend: str
    code: int
    words: tuple[str, ...]
    arrange: Callable[[Path, Path, str], dict[str, str]]
    left: Callable[[Path, Path], list[Path]] = lambda _project, _tmp: []
    check: Callable[[str], object] = lambda _line: None


def _tls_file_unreadable(project: Path, tmp_path: Path, url: str) -> dict[str, str]:
    write_migrations(project, 1)
    # A directory where PyMySQL expects a CA file: a local file error (as an unreadable key).
    unreadable = sa.make_url(url).update_query_dict({"ssl_ca": str(tmp_path)})
    return subprocess_env(
        DATABASE_URL=unreadable.render_as_string(hide_password=False),
        MIGRATE_CONNECT_TIMEOUT="60",
    )


def _tls_refused(project: Path, _tmp: Path, url: str) -> dict[str, str]:
    write_migrations(project, 1)
    return subprocess_env(DATABASE_URL=f"{url}?sslmode=require", MIGRATE_CONNECT_TIMEOUT="60")


def _no_migrations_folder(project: Path, _tmp: Path, _url: str) -> dict[str, str]:
    return subprocess_env(DATABASE_URL="sqlite:///app.db")


def _full_backup_dir(project: Path, tmp_path: Path, _url: str) -> dict[str, str]:
    location = write_migrations(project, 1)
    database = project / "app.db"
    migrate(MigrateSettings(database_url=f"sqlite:///{database}"))
    execute(f"sqlite:///{database}", "INSERT INTO t1 (id, name) VALUES (1, 'kept')")
    add_revision(location, "r2", "r1", table="t2")
    backups = tmp_path / "full"
    fill(backups)
    return subprocess_env(DATABASE_URL="sqlite:///app.db", MIGRATE_BACKUP_DIR=str(backups))


def _full_disk(project: Path, tmp_path: Path, _url: str) -> dict[str, str]:
    location = write_migrations(project, 1)
    database = tmp_path / "full" / "app.db"
    migrate(MigrateSettings(database_url=f"sqlite:///{database}"))
    add_revision(location, "r2", "r1", table="t2")
    fill(database.parent)
    return subprocess_env(DATABASE_URL=f"sqlite:///{database}")


def _frozen_server(project: Path, _tmp: Path, _url: str) -> dict[str, str]:
    write_migrations(project, 1)
    return subprocess_env(
        DATABASE_URL=f"postgresql+psycopg://app@127.0.0.1:{silent_server().port}/x",
        MIGRATE_CONNECT_TIMEOUT="5",
    )


def _spent_once(line: str) -> None:
    # Each connection the server accepted waited for the timeout: every one of them must be
    # an attempt the line counts against MIGRATE_CONNECT_TIMEOUT (none made before it began).
    assert silent_connections() == attempts_reported(line), line


FAULTS = {
    "tls-file-the-driver-cannot-read": Fault(
        "mariadb", 1, ("cannot connect to", "(1 attempt in", "Is a directory"), _tls_file_unreadable
    ),
    "tls-required-by-a-server-without-it": Fault(
        "postgresql",
        1,
        ("cannot connect to", "(1 attempt in", "does not support SSL"),
        _tls_refused,
    ),
    "no-migrations-folder": Fault(
        "sqlite",
        2,
        ("migration scripts", "fastapi-migrate init"),
        _no_migrations_folder,
        left=lambda project, _tmp: [project / "app.db"],
    ),
    "full-backup-dir": Fault(
        "sqlite",
        2,
        ("MIGRATE_BACKUP_DIR: could not back up", "nothing was migrated"),
        _full_backup_dir,
        left=lambda _project, tmp: [p for p in (tmp / "full").iterdir() if p.name != "filler"],
    ),
    "server-that-accepts-and-never-answers": Fault(
        "sqlite",  # no server needed: the port is this process's own
        1,
        ("cannot connect to", "MIGRATE_CONNECT_TIMEOUT=5"),
        _frozen_server,
        check=_spent_once,
    ),
    "full-disk-under-the-lock-file": Fault(
        "sqlite",
        1,
        ("app.db.migrate-lock", "No space left on device"),
        _full_disk,
    ),
}


@pytest.mark.parametrize("how", ["cli", "uvicorn"])
@pytest.mark.parametrize("case", list(FAULTS))
def test_a_local_fault_is_one_clear_error_at_once(
    project: Path, tmp_path: Path, case: str, how: str
) -> None:
    fault = FAULTS[case]
    with contextlib.ExitStack() as stack:
        if fault.backend != "sqlite":
            require_backend(fault.backend)
            url = stack.enter_context(fresh_database(fault.backend, tmp_path))
        else:
            url = ""
            if case.startswith("full-"):
                stack.enter_context(small_filesystem(tmp_path / "full"))
        env = fault.arrange(project, tmp_path, url)
        if how == "cli":
            line = fails(cli(project, "upgrade", env=env), fault.code, *fault.words)
            assert line.startswith("fastapi-migrate: error: "), line
        else:
            output = uvicorn_start_fails(project, env)
            [line] = [x for x in output.splitlines() if "the app will not start" in x]
            for word in fault.words:
                assert word in line, output
        fault.check(line)
        assert [p for p in fault.left(project, tmp_path) if p.exists()] == []
