"""The test server's errors as one line of our own: the driver's frames hold its connect
arguments (the password among them), and pytest prints a frame's arguments even without ``-l``.
"""

from __future__ import annotations

from .server_choice import SERVER_URL_VARIABLE, server_url


def server_failure(error: BaseException) -> str:
    """The line for a test server that could not be used, every secret masked. Raise it
    ``from None``, outside the ``except`` block, from a frame that holds no URL."""
    from ..foundation.errors import MigrationError
    from ..foundation.redaction import error_line, mask_url, redact

    url = server_url()
    reason = (
        f"{type(error).__name__}: {error}"
        if isinstance(error, MigrationError)
        else error_line(error, [url])
    )
    return redact(
        f"fastapi-migrate: the test databases on {mask_url(url)} (--migrate-db-url / "
        f"{SERVER_URL_VARIABLE}) could not be prepared: {' '.join(reason.split())}",
        [url],
    )
