"""Which server the test plugin's databases go to; stdlib only, so the plugin loads fast."""

from __future__ import annotations

import os

SERVER_URL_VARIABLE = "MIGRATE_TEST_DATABASE_URL"
_option_url: str | None = None


def set_server_url(url: str | None) -> None:
    """Record ``--migrate-db-url`` (the pytest plugin calls this); it wins over the env var."""
    global _option_url
    _option_url = url or None


def server_url_option() -> str | None:
    """What ``set_server_url`` recorded."""
    return _option_url


def server_url() -> str | None:
    """The server test databases go to: ``--migrate-db-url``, ``MIGRATE_TEST_DATABASE_URL``,
    else ``None`` (temporary SQLite files)."""
    return _option_url or os.environ.get(SERVER_URL_VARIABLE) or None
