"""One module per database; ``backend_for`` picks one from the dialect's name, once.

A backend's module is imported when its dialect is first asked for: a command on PostgreSQL
never imports MySQL's (the CLI's ``lint`` is timed against ``alembic upgrade --sql``)."""

from __future__ import annotations

import importlib
import threading

from .base import Backend

_MODULES = {
    "postgresql": ("postgresql", "PostgreSQL"),
    "mysql": ("mysql", "MySQL"),
    "mariadb": ("mysql", "MySQL"),
    "sqlite": ("sqlite", "SQLite"),
    # sqlalchemy-cockroachdb's dialect; known by name even where it is not installed.
    "cockroachdb": ("cockroachdb", "CockroachDB"),
}
_BACKENDS: dict[str, Backend] = {}
_loading = threading.Lock()


def backend_for(dialect: str) -> Backend:
    """The ``Backend`` of a SQLAlchemy dialect name; the defaults for any other."""
    found = _BACKENDS.get(dialect)
    if found is not None:
        return found
    where = _MODULES.get(dialect)
    if where is None:
        return Backend(dialect)
    with _loading:
        if dialect not in _BACKENDS:
            module = importlib.import_module(f"{__name__}.{where[0]}")
            _BACKENDS[dialect] = getattr(module, where[1])(dialect)
        return _BACKENDS[dialect]


__all__ = ["Backend", "backend_for"]
