"""Keep the app's logging as it was, whatever an ``env.py`` does to it.

Alembic's stock ``env.py`` calls ``logging.config.fileConfig``, whose
``disable_existing_loggers=True`` silences every logger the app made before. fastapi-migrate hands
``env.py`` a Config without a file name (so the stock template skips that call) and, for an
``env.py`` that configures logging anyway, puts every logger back afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class _LoggerState:
    level: int
    handlers: list[logging.Handler]
    disabled: bool
    propagate: bool

    @classmethod
    def of(cls, logger: logging.Logger) -> _LoggerState:
        return cls(logger.level, list(logger.handlers), logger.disabled, logger.propagate)

    def apply(self, logger: logging.Logger) -> None:
        logger.setLevel(self.level)
        logger.handlers[:] = self.handlers
        logger.disabled = self.disabled
        logger.propagate = self.propagate


_PRISTINE = _LoggerState(logging.NOTSET, [], False, True)


def _loggers() -> dict[str, logging.Logger]:
    return {
        name: logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
    }


@contextmanager
def preserved_logging() -> Iterator[None]:
    """Restore levels, handlers and the disabled flag of every logger on exit."""
    root = logging.getLogger()
    saved_root = _LoggerState.of(root)
    saved = {name: _LoggerState.of(logger) for name, logger in _loggers().items()}
    try:
        yield
    finally:
        saved_root.apply(root)
        for name, logger in _loggers().items():
            saved.get(name, _PRISTINE).apply(logger)
