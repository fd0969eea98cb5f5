"""Make the one startup line visible under a server that left logging unconfigured.

uvicorn configures only its own loggers, so without this our INFO line would fall to Python's
last-resort handler, which shows warnings only. When nothing would show our records, they go
through uvicorn's handlers at uvicorn's level (``--log-level debug`` shows one line per
revision), else to stderr at INFO. An app that configured logging itself is left alone.
"""

from __future__ import annotations

import logging


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname + ':':<10}{super().format(record)}"


def ensure_visible(name: str = "fastapi_migrate") -> None:
    """Give ``name`` a handler when no handler anywhere would receive its records."""
    logger = logging.getLogger(name)
    if logger.hasHandlers():
        return
    # uvicorn puts its handlers on "uvicorn" (gunicorn's UvicornWorker on "uvicorn.error") and
    # its --log-level on "uvicorn.error".
    handlers = logging.getLogger("uvicorn.error").handlers or logging.getLogger("uvicorn").handlers
    if handlers:
        logger.handlers[:] = list(handlers)
        level = logging.getLogger("uvicorn.error").getEffectiveLevel()
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(_Prefixed("%(message)s"))
        logger.handlers[:] = [handler]
        level = logging.INFO
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
