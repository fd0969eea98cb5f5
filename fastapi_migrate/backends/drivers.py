"""Which driver a URL names: parsing it safely, async or not, and a blocking twin for it."""

from __future__ import annotations

from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url

from ..core.errors import ConfigurationError
from ..core.redaction import has_unescaped_at, mask_url, redact

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
        return url if isinstance(url, URL) else make_url(url)
    except (exc.ArgumentError, ValueError) as error:
        raise ConfigurationError(
            f"{variable}: {mask_url(str(url))} is not a database URL "
            f"(expected e.g. postgresql+psycopg://user:password@host/db): "
            f"{redact(str(error), [str(url)])}"
        ) from None


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
