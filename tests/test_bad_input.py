"""Bad input, each with its clear error, its exit code, and the database left as it was.

Every case runs ``fastapi-migrate upgrade`` (the startup logic of the app) as a real process
against a PostgreSQL database that is at r1 with a row in t1, then checks that the database
still has exactly the same tables, version and rows. Password masking in these errors is
tests/test_safety.py's subject (and tests/test_properties.py's); here it is the clarity of the
message, the exit code and that nothing was touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import ConfigurationError, MigrateSettings, migrate, migrate_on_startup

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
    execute,
    fresh_database,
    subprocess_env,
    table_names,
    unique_name,
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
        ("DATABASE_URL: unknown database driver 'postgres'",),
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
