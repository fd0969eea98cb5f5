"""Which driver a URL names: parsing it safely, async or not, and a blocking twin for it."""

from __future__ import annotations

import importlib.util

from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url

from ..foundation.errors import ConfigurationError
from ..foundation.redaction import has_unescaped_at, mask_url, redact

EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
"""The package extra that installs a backend's driver."""

_SYNC_DRIVERS = {
    "sqlite": ("pysqlite",),
    "postgresql": ("psycopg", "psycopg2", "pg8000"),
    "mysql": ("pymysql", "mysqldb", "mysqlconnector"),
    "mariadb": ("pymysql", "mysqldb", "mysqlconnector"),
}


def parse_url(url: str | URL, variable: str = "DATABASE_URL") -> URL:
    """A SQLAlchemy URL, or a ``ConfigurationError`` that names the variable but no password."""
    if isinstance(url, str) and has_unescaped_at(url):
        raise ConfigurationError(
            f"{variable}: {mask_url(url)}: the password holds a raw '@', so the rest of it "
            "would be read as the host; write each '@' in the password as %40"
        )
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (exc.ArgumentError, ValueError) as error:
        raise ConfigurationError(
            f"{variable}: {mask_url(str(url))} is not a database URL "
            f"(expected e.g. postgresql+psycopg://user:password@host/db): "
            f"{redact(str(error), [str(url)])}"
        ) from None
    _check_scheme(parsed, variable)
    return parsed


def _check_scheme(url: URL, variable: str) -> None:
    """Two URLs SQLAlchemy refuses with an error that does not say what to write instead."""
    backend = url.drivername.partition("+")[0]
    if backend == "postgres":  # what Heroku, Render and Fly hand out
        driver = installed_postgres_driver()
        raise ConfigurationError(
            f"{variable}: {mask_url(url)}: SQLAlchemy does not read postgres:// (since 1.4): "
            f"write {driver}:// instead, e.g. {mask_url(url.set(drivername=driver))}"
        )
    if backend == "sqlite" and url.host:  # sqlite://app.db: the path was read as a host
        path = "/".join(part for part in (url.host, url.database) if part)
        raise ConfigurationError(
            f"{variable}: {mask_url(url)} is not a SQLite URL: write sqlite:///{path} (three "
            f"slashes, then a path relative to the working directory), or sqlite:////{path} "
            "(four slashes for an absolute path)"
        )


def installed_postgres_driver() -> str:
    """The scheme with the PostgreSQL driver that is installed: psycopg 3 (what the
    ``postgres`` extra brings), else psycopg2; psycopg 3 when neither is."""
    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return scheme
    return "postgresql+psycopg"


def missing_driver_hint(url: URL, missing: str | None) -> str:
    """For plain ``postgresql://`` (psycopg2 to SQLAlchemy) without psycopg2: the scheme of
    the driver that is installed; "" otherwise."""
    if url.drivername != "postgresql" or missing != "psycopg2":
        return ""
    driver = installed_postgres_driver()
    if driver == "postgresql+psycopg2":
        return ""
    return (
        f"; postgresql:// means psycopg2 to SQLAlchemy: write {driver}:// to use psycopg 3, "
        f"e.g. {mask_url(url.set(drivername=driver))}"
    )


def is_async_url(url: URL) -> bool:
    """Whether the URL names an asyncio driver (``asyncpg``, ``aiosqlite``, ``aiomysql``...)."""
    try:
        return bool(url.get_dialect().is_async)
    except Exception:
        return False


def sync_url(url: str | URL, variable: str = "--migrate-db-url") -> URL:
    """The same database through a blocking driver (the test janitor's, ``migrated_engine``'s)."""
    parsed = parse_url(url, variable)
    if not is_async_url(parsed):
        return parsed
    backend = parsed.get_backend_name()
    for driver in _SYNC_DRIVERS.get(backend, ()):
        candidate = parsed.set(drivername=f"{backend}+{driver}")
        try:
            candidate.get_dialect().import_dbapi()
        except ImportError:
            continue
        return candidate
    raise ConfigurationError(
        f"{mask_url(parsed)}: the test databases are created and dropped through a blocking "
        f"driver, and none is installed for {backend} (tried {', '.join(_SYNC_DRIVERS[backend])})"
    )
