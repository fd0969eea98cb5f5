"""The seed: what a prestart script ran after ``alembic upgrade head`` (a first superuser,
reference rows), run by every start under the migration lock, after the migration.

Run outside the lock (in the app's own lifespan), ``uvicorn --workers 4`` on a fresh database
has four processes insert the same first user at once: three fail on its unique index. Under
the lock they run one after the other, and each sees what the one before committed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from ..foundation.errors import ConfigurationError
from ..foundation.imports import import_object

Seed = Callable[[Connection], Any]
"""Called with a ``Connection`` in a transaction committed when it returns."""


def import_seed(path: str) -> Seed:
    """Import ``package.module:function`` (the current directory is importable)."""
    value = import_object(path, "MIGRATE_SEED", "module:function (e.g. app.seed:first_user)")
    return checked_seed(value, path)


def checked_seed(value: object, name: str) -> Seed:
    """``value`` if it is a plain function of one connection; else one clear error."""
    if not callable(value):
        raise ConfigurationError(
            f"MIGRATE_SEED: {name!r} is a {type(value).__name__}, not a function"
        )
    if inspect.iscoroutinefunction(value):
        raise ConfigurationError(
            f"MIGRATE_SEED: {name!r} is an async function; the seed runs in the migration's "
            "thread with a sync Connection: make it a plain def (Session(bind=connection) works)"
        )
    return value


def seed_name(seed: Seed) -> str:
    """How the log and errors name the seed: ``module:function``."""
    return f"{getattr(seed, '__module__', '?')}:{getattr(seed, '__qualname__', repr(seed))}"


def run_seed(seed: Seed, connection: Connection) -> float:
    """Call the seed on ``connection`` (its transaction is the caller's); its seconds."""
    began = time.monotonic()
    seed(connection)
    return time.monotonic() - began
