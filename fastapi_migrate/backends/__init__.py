"""One module per database; ``backend_for`` picks one from the dialect's name, once."""

from __future__ import annotations

from .base import Backend
from .cockroachdb import CockroachDB
from .mysql import MySQL
from .postgresql import PostgreSQL
from .sqlite import SQLite

_BACKENDS: dict[str, Backend] = {
    "postgresql": PostgreSQL("postgresql"),
    "mysql": MySQL("mysql"),
    "mariadb": MySQL("mariadb"),
    "sqlite": SQLite("sqlite"),
    # sqlalchemy-cockroachdb's dialect; known by name even where it is not installed.
    "cockroachdb": CockroachDB("cockroachdb"),
}


def backend_for(dialect: str) -> Backend:
    """The ``Backend`` of a SQLAlchemy dialect name; the defaults for any other."""
    return _BACKENDS.get(dialect) or Backend(dialect)


__all__ = ["Backend", "backend_for"]
