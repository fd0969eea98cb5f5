"""The database a pytest fixture lends the running test; stdlib only, so the plugin loads fast.

Inside a test that uses one of the plugin's database fixtures, the app's
``migrate_on_startup()`` lifespan (run by ``TestClient(app)`` or a lifespan manager) must work on
that test's database, never on ``DATABASE_URL``'s: the developer's own database would be
migrated by the test run. The fixture lends its URL here for the test's duration; the lifespan
and the readiness probe read it. A process-wide value, not a context variable: ``TestClient``
runs the app in a thread of its own, which sees no context variable the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import MigrateSettings

log = logging.getLogger("fastapi_migrate")

_lent: list[str] = []
"""The URLs lent by the fixtures now set up, innermost last."""


@contextmanager
def lend(url: str) -> Iterator[str]:
    """Within the block, an app's migration works on ``url`` (the fixture's database)."""
    _lent.append(url)
    try:
        yield url
    finally:
        _lent.remove(url)


def lent_url() -> str | None:
    """The URL of the database lent to the running test, if a fixture lent one."""
    return _lent[-1] if _lent else None


def on_lent_database(settings: MigrateSettings) -> MigrateSettings:
    """The settings pointed at the database lent to the running test, if any: whatever URL the
    app gave (``DATABASE_URL``, ``database_url=``), a test never migrates the developer's."""
    url = lent_url()
    if url is None or (url == settings.database_url and not settings.migrate_database_url):
        return settings
    from .redaction import mask_url

    log.info("inside a test: working on its database %s, not DATABASE_URL's", mask_url(url))
    return settings.model_copy(update={"database_url": url, "migrate_database_url": None})
