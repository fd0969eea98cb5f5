"""Keep the app's logging as it was, whatever an ``env.py`` does to it.

Alembic's stock ``env.py`` calls ``logging.config.fileConfig(config.config_file_name)``, whose
``disable_existing_loggers=True`` silences every logger the app made before. ``env.py`` gets the
ini's real file name (many call ``fileConfig`` without checking it for ``None``, or assert it is
set), but while it runs ``logging.config.fileConfig`` does nothing; for an ``env.py`` that
configures logging another way, every logger is put back afterwards.
"""

from __future__ import annotations

import logging
import logging.config
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fastapi_migrate")


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


def _skip_file_config(fname: Any, *args: Any, **kwargs: Any) -> None:
    log.debug("env.py's logging.config.fileConfig(%r) skipped: the app's logging is kept", fname)


_guards = 0
_guards_lock = threading.Lock()
_original_file_config = logging.config.fileConfig


@contextmanager
def _file_config_skipped() -> Iterator[None]:
    """``logging.config.fileConfig`` is a no-op inside the block (counted: blocks may nest, or
    overlap in two threads; the last to leave puts it back)."""
    global _guards, _original_file_config
    with _guards_lock:
        if _guards == 0:
            _original_file_config = logging.config.fileConfig
        _guards += 1
        logging.config.fileConfig = _skip_file_config
    try:
        yield
    finally:
        with _guards_lock:
            _guards -= 1
            if _guards == 0:
                logging.config.fileConfig = _original_file_config


@contextmanager
def preserved_logging() -> Iterator[None]:
    """``fileConfig`` skipped, and levels, handlers and the disabled flag of every logger
    restored on exit."""
    root = logging.getLogger()
    saved_root = _LoggerState.of(root)
    saved = {name: _LoggerState.of(logger) for name, logger in _loggers().items()}
    try:
        with _file_config_skipped():
            yield
    finally:
        saved_root.apply(root)
        for name, logger in _loggers().items():
            saved.get(name, _PRISTINE).apply(logger)
