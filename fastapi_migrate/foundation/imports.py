"""``import_object``: what a ``module:attribute`` setting names (``MIGRATE_METADATA``,
``MIGRATE_SEED``), with one clear error naming the variable for each way it can fail."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .errors import ConfigurationError


def import_object(path: str, variable: str, form: str) -> object:
    """Import ``package.module:attr.attr`` (the current directory is importable, as for
    ``uvicorn app:app``); ``form`` is what the error says the value should look like."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{variable}: {path!r} is not of the form {form}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        value: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"{variable}: cannot import {module_name!r}: {error}") from None
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(
                f"{variable}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    return value
