"""The name of a kept template: which project it belongs to, and a hash of what decides its schema.

A template is kept between pytest runs and used again as long as nothing that decides its
schema changed: every file of every tree's scripts folder and version locations (the revisions'
contents and ``env.py``), the settings that choose the trees, targets, version tables and empty
database strategy, and the server (dialect and version). A changed, added or removed revision
gives another key, hence another name: a stale template is never used, only dropped. What the
key cannot see (``env.py`` reading an environment variable, models imported from elsewhere for
``MIGRATE_EMPTY_DATABASE=create_all``) is what ``--migrate-rebuild`` is for.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from alembic.script import ScriptDirectory

from ..backends.base import PREFIX
from ..foundation.settings import MigrateSettings
from ..glue.config import alembic_config

KEY_FORMAT = 1
"""Bumped when what a template holds changes for the same inputs (a new fastapi-migrate)."""

_SETTINGS = ("target", "version_table", "version_table_schema", "baseline", "empty_database")


def _folders(settings: MigrateSettings) -> list[Path]:
    """Every folder whose files the trees' migrations run: scripts folders, version locations."""
    found: list[Path] = []
    for _name, tree in settings.each_tree():
        script = ScriptDirectory.from_config(alembic_config(tree, url=""))
        for folder in [script.dir, *script.version_locations]:
            path = Path(folder).resolve()
            if path not in found:
                found.append(path)
    return found


def _hash_folder(digest: hashlib._Hash, folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            path = Path(root, name)
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")


def _project(folders: list[Path]) -> str:
    return hashlib.sha256("\0".join(map(str, folders)).encode()).hexdigest()[:8]


def template_family(settings: MigrateSettings) -> str:
    """The name every kept template of this project starts with (its scripts folders' paths)."""
    return f"{PREFIX}tpl_{_project(_folders(settings))}"


def template_key(settings: MigrateSettings, server_identity: str) -> tuple[str, str]:
    """``(family, key)``: ``template_family``, and 16 hex digits naming the schema the
    project's migrations build on this server."""
    folders = _folders(settings)
    project = f"{PREFIX}tpl_{_project(folders)}"
    chosen = {name: getattr(settings, name) for name in _SETTINGS}
    chosen["trees"] = [tree.model_dump(mode="json") for tree in settings.trees]
    chosen["metadata"] = settings.metadata if settings.empty_database == "create_all" else None
    digest = hashlib.sha256(
        json.dumps([KEY_FORMAT, server_identity, chosen], sort_keys=True, default=str).encode()
    )
    for folder in folders:
        digest.update(str(folder).encode() + b"\0")
        _hash_folder(digest, folder)
    return project, digest.hexdigest()[:16]
