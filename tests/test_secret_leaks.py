"""A password never leaves the process: every error path we know, with the password in every
place one can be (the URL's userinfo, its query string, %-encoded, alembic.ini, a libpq string,
a stray argument, the pytest plugin's --migrate-db-url), on the backends where it applies.

Each case runs a real process (the CLI, uvicorn, an inner pytest), checks that it failed the
way the case means (so the error path really ran), and then that the password shows nowhere:
not in stdout, stderr, the server's log, pytest's report (with and without ``-l``).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from fastapi_migrate import ConfigurationError, MigrateSettings

from .cli_helpers import cli
from .conftest import require_backend
from .support import (
    refused_port,
    start_uvicorn,
    stop,
    subprocess_env,
    unique_name,
    write_migrations,
)


def _secret() -> str:
    """A password no message could contain by chance; its hex tail is what we look for."""
    return f"Pw{uuid.uuid4().hex[:10]}"


def assert_hidden(secret: str, output: str) -> None:
    assert secret not in output, output
    assert quote(secret, safe="") not in output, output


# -- where the password is -----------------------------------------------------------------------

# A URL maker: (password) -> URL. PostgreSQL at a refused port (the server is trust-only, a wrong
# password would be accepted), PostgreSQL with a database that does not exist (a reachable
# server's refusal), MariaDB with a wrong password (the server's refusal).


def _pg_refused(driver: str = "psycopg") -> Callable[[str, str], str]:
    def make(place: str, pw: str) -> str:
        return _place(f"postgresql+{driver}", f"127.0.0.1:{refused_port()}", "x", place, pw)

    return make


def _pg_missing(place: str, pw: str) -> str:
    return _place("postgresql+psycopg", "127.0.0.1:5432", unique_name("fm_nosuch"), place, pw)


def _mariadb_wrong(place: str, pw: str) -> str:
    return _place("mysql+pymysql", "127.0.0.1:3306", "test", place, pw)


def _place(scheme: str, host: str, db: str, place: str, pw: str) -> str:
    user = "root" if scheme.startswith("mysql") else "postgres"
    if place == "userinfo":
        return f"{scheme}://{user}:{pw}@{host}/{db}"
    if place == "encoded":  # a password with @ / : in it, %-encoded as it must be
        return f"{scheme}://{user}:{quote(pw + '@/:x', safe='')}@{host}/{db}"
    if place == "query":
        return f"{scheme}://{user}@{host}/{db}?password={pw}"
    if place == "query-passwd":
        return f"{scheme}://{user}@{host}/{db}?passwd={pw}"
    if place == "query-sslpassword":
        return f"{scheme}://{user}@{host}/{db}?sslpassword={pw}"
    raise AssertionError(place)


@dataclass(frozen=True)
class Target:
    backend: str
    url: Callable[[str, str], str]
    places: tuple[str, ...]


TARGETS = {
    "pg-refused": Target(
        "postgresql", _pg_refused(), ("userinfo", "encoded", "query", "query-sslpassword")
    ),
    "asyncpg-refused": Target("postgresql", _pg_refused("asyncpg"), ("userinfo", "query")),
    "pg-missing-database": Target("postgresql", _pg_missing, ("userinfo", "query")),
    "mariadb-wrong-password": Target(
        "mariadb", _mariadb_wrong, ("userinfo", "encoded", "query", "query-passwd")
    ),
}
URL_CASES = [(t, p) for t, target in TARGETS.items() for p in target.places]


def _env(**extra: str) -> dict[str, str]:
    return subprocess_env(MIGRATE_CONNECT_TIMEOUT="1", **extra)


@pytest.mark.parametrize(("target", "place"), URL_CASES)
def test_cli_errors_never_show_the_password(project: Path, target: str, place: str) -> None:
    """``current`` with DATABASE_URL, ``upgrade --verbose`` (the traceback) with --database-url,
    ``check`` with MIGRATE_DATABASE_URL."""
    spec = TARGETS[target]
    require_backend(spec.backend)
    write_migrations(project, 1)
    secret = _secret()
    url = spec.url(place, secret)
    runs = [
        cli(project, "current", env=_env(DATABASE_URL=url)),
        cli(project, "upgrade", "--verbose", "--database-url", url, env=_env()),
        cli(project, "upgrade", env=_env(DATABASE_URL=url, MIGRATE_DATABASE_URL=url)),
    ]
    for result in runs:
        assert result.returncode == 1, result.stderr
        assert "cannot connect to" in result.stderr, result.stderr
        assert_hidden(secret, result.stdout + result.stderr)


@pytest.mark.parametrize(
    ("target", "place"),
    [("pg-refused", "query"), ("pg-refused", "userinfo"), ("mariadb-wrong-password", "query")],
)
def test_a_failed_start_under_uvicorn_never_logs_the_password(
    project: Path, target: str, place: str
) -> None:
    spec = TARGETS[target]
    require_backend(spec.backend)
    write_migrations(project, 1)
    (project / "app.py").write_text(
        "from fastapi import FastAPI\nfrom fastapi_migrate import migrate_on_startup\n"
        "app = FastAPI(lifespan=migrate_on_startup())\n"
    )
    secret = _secret()
    proc, _port = start_uvicorn("app:app", project, _env(DATABASE_URL=spec.url(place, secret)))
    try:
        proc.wait(120)
    finally:
        output = stop(proc)
    assert proc.returncode != 0, output
    assert "migration failed, the app will not start" in output, output
    assert_hidden(secret, output)


def test_repr_of_the_settings_masks_every_secret() -> None:
    secret = _secret()
    for place in ("userinfo", "encoded", "query", "query-sslpassword"):
        url = _place("postgresql+psycopg", "h", "x", place, secret)
        settings = MigrateSettings(database_url=url, migrate_database_url=url)
        assert_hidden(secret, repr(settings) + str(settings))
    passfile = MigrateSettings(database_url="postgresql+psycopg://u@h/x?passfile=/run/pgpass")
    assert "/run/pgpass" not in repr(passfile)
    sslkey = MigrateSettings(database_url="postgresql+psycopg://u@h/x?sslkey=/run/client.key")
    assert "client.key" in repr(sslkey)  # a path, not a secret: kept for the reader


# -- alembic.ini, a libpq string, a stray argument ----------------------------------------------


def test_a_raw_percent_in_alembic_ini_names_the_option_not_the_value(project: Path) -> None:
    """configparser's own error quotes the rest of the value (an encoded password)."""
    write_migrations(project, 1)
    secret = _secret()
    encoded = quote(f"{secret}@/:", safe="")
    (project / "alembic.ini").write_text(
        "[alembic]\nscript_location = migrations\n"
        f"sqlalchemy.url = postgresql+psycopg://u:{encoded}@127.0.0.1/x\n"
    )
    for command in ("history", "current", "upgrade"):
        result = cli(project, command, env=_env())
        assert result.returncode == 2, result.stderr
        assert "sqlalchemy.url" in result.stderr and "'%%'" in result.stderr, result.stderr
        assert_hidden(secret, result.stdout + result.stderr)
        assert encoded[len(secret) :] not in result.stderr  # no part of the value


def test_an_escaped_password_in_alembic_ini_is_masked_when_unreachable(project: Path) -> None:
    write_migrations(project, 1)
    secret = _secret()
    encoded = quote(f"{secret}@/:", safe="").replace("%", "%%")
    (project / "alembic.ini").write_text(
        "[alembic]\nscript_location = migrations\n"
        f"sqlalchemy.url = postgresql+psycopg://u:{encoded}@127.0.0.1:{refused_port()}/x\n"
    )
    for args in (("current",), ("upgrade", "-v")):
        result = cli(project, *args, env=_env())
        assert result.returncode == 1, result.stderr
        assert "cannot connect to postgresql+psycopg://u:***@" in result.stderr, result.stderr
        assert_hidden(secret, result.stdout + result.stderr)


@pytest.mark.parametrize(
    "text",
    [
        "host=127.0.0.1 user=u password={pw} dbname=x",
        "host=127.0.0.1 password='{pw} x' dbname=x",
        "dbname=x sslpassword={pw}",
        "u:{pw}@127.0.0.1/x",
    ],
)
def test_text_that_is_not_a_url_is_echoed_masked(project: Path, text: str) -> None:
    write_migrations(project, 1)
    secret = _secret()
    for env in ({"DATABASE_URL": text.format(pw=secret)}, {}):
        args = ("current",) if env else ("current", "--database-url", text.format(pw=secret))
        result = cli(project, *args, env=_env(**env))
        assert result.returncode == 2, result.stderr
        assert "is not a database URL" in result.stderr, result.stderr
        assert_hidden(secret, result.stdout + result.stderr)


@pytest.mark.parametrize(
    "extra",
    [
        ("postgresql+psycopg://u:{pw}@127.0.0.1/x",),
        ("postgresql+psycopg://u@127.0.0.1/x?password={pw}",),
        ("host=127.0.0.1 password={pw}",),
        ("--database-url=postgresql+psycopg://u:{pw}@h/x", "--nosuchflag"),
    ],
)
def test_a_stray_argument_is_echoed_masked(project: Path, extra: tuple[str, ...]) -> None:
    secret = _secret()
    args = [a.format(pw=secret) for a in extra]
    for argv in (["current", *args], args[:1]):  # after a command, and as the command
        result = cli(project, *argv, env=_env())
        assert result.returncode == 2, result.stderr
        assert "error:" in result.stderr, result.stderr
        assert_hidden(secret, result.stdout + result.stderr)


# -- the pytest plugin ----------------------------------------------------------------------------


PLUGIN_CASES = {
    "pg-refused-userinfo": ("postgresql", lambda pw: _pg_refused()("userinfo", pw)),
    "pg-refused-query": ("postgresql", lambda pw: _pg_refused()("query", pw)),
    "pg-missing-database": ("postgresql", lambda pw: _pg_missing("userinfo", pw)),
    "mariadb-wrong-password": ("mariadb", lambda pw: _mariadb_wrong("userinfo", pw)),
    "mariadb-wrong-password-query": ("mariadb", lambda pw: _mariadb_wrong("query", pw)),
}


@pytest.mark.parametrize("flags", [(), ("-l",), ("-l", "--tb=long", "-vv")])
@pytest.mark.parametrize("case", list(PLUGIN_CASES))
def test_the_plugin_never_shows_the_password_of_migrate_db_url(
    project: Path, case: str, flags: tuple[str, ...]
) -> None:
    """The driver's frames hold its connect arguments (shown by pytest even without ``-l``):
    the plugin's error must come from a frame that holds no secret."""
    backend, make = PLUGIN_CASES[case]
    require_backend(backend)
    write_migrations(project, 1)
    (project / "test_app.py").write_text(
        "def test_uses_the_database(migrated_database_url):\n    assert migrated_database_url\n"
    )
    secret = _secret()
    for how in ("option", "variable"):
        url = make(secret)
        args = ["--migrate-db-url", url] if how == "option" else []
        env = _env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        if how == "variable":
            env["MIGRATE_TEST_DATABASE_URL"] = url
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "fastapi_migrate.pytest_plugin", *flags, *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "could not be prepared" in output, output
        assert_hidden(secret, output)


@pytest.mark.parametrize("flags", [(), ("-l",)])
@pytest.mark.parametrize("case", ["pg-refused-userinfo", "mariadb-wrong-password"])
def test_the_testing_checks_never_show_the_password_of_the_test_server(
    project: Path, case: str, flags: tuple[str, ...]
) -> None:
    """``assert_upgrade_downgrade_roundtrip()`` makes its scratch database on the plugin's
    server: the same rule as the fixtures."""
    backend, make = PLUGIN_CASES[case]
    require_backend(backend)
    write_migrations(project, 1)
    (project / "test_checks.py").write_text(
        "from fastapi_migrate.testing import assert_upgrade_downgrade_roundtrip\n\n\n"
        "def test_roundtrip():\n    assert_upgrade_downgrade_roundtrip()\n"
    )
    secret = _secret()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "fastapi_migrate.pytest_plugin", *flags],
        cwd=project,
        env=_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", MIGRATE_TEST_DATABASE_URL=make(secret)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "DatabaseUnavailable" in output and "could not be prepared" in output, output
    assert_hidden(secret, output)


@pytest.mark.parametrize(
    "value", ["postgresql+psycopg://u:{pw}@127.0.0.1/x", "host=127.0.0.1 password={pw}"]
)
@pytest.mark.parametrize("variable", ["MIGRATE_LOCK_TIMEOUT", "MIGRATE_MODE", "MIGRATE_LOCK"])
def test_a_url_in_the_wrong_variable_is_echoed_masked(
    project: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """``(got ...)`` repeats a bad value: a URL pasted into the wrong variable shows no secret,
    in the CLI's line and in the ConfigurationError the lifespan raises and logs."""
    write_migrations(project, 1)
    secret = _secret()
    bad = value.format(pw=secret)
    result = cli(project, "current", env=_env(DATABASE_URL="sqlite:///app.db", **{variable: bad}))
    assert result.returncode == 2, result.stderr
    assert f"{variable}:" in result.stderr, result.stderr
    assert_hidden(secret, result.stdout + result.stderr)
    monkeypatch.setenv(variable, bad)
    with pytest.raises(ConfigurationError, match=variable) as caught:
        MigrateSettings(database_url="sqlite://")
    assert_hidden(secret, str(caught.value))
