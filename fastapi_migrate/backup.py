"""``backup_sqlite``: a consistent copy of a SQLite file before any DDL touches it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .errors import ConfigurationError


def _has_tables(connection: sqlite3.Connection) -> bool:
    row = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return bool(row and row[0])


def backup_sqlite(database: str, backup_dir: Path, label: str) -> Path | None:
    """Copy ``database`` into ``backup_dir`` with SQLite's online backup API.

    The backup API copies a consistent snapshot even while other connections write (a plain
    file copy can catch a half-written page or miss the WAL). Returns the backup's path, or
    ``None`` when there is nothing to keep: an in-memory, missing or table-less database. A
    backup that cannot be made stops the migration: no DDL runs without it.
    """
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    source_path = Path(database)
    if not source_path.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = backup_dir / f"{source_path.stem}-{label}-{stamp}{source_path.suffix or '.sqlite'}"
    try:
        source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if not _has_tables(source):
                return None
            backup_dir.mkdir(parents=True, exist_ok=True)
            destination = sqlite3.connect(str(target))
            try:
                source.backup(destination)
            finally:
                destination.close()
        finally:
            source.close()
    except (OSError, sqlite3.Error) as error:
        raise ConfigurationError(
            f"MIGRATE_BACKUP_DIR: could not back up {source_path} to {target} ({error}); "
            "nothing was migrated"
        ) from None
    return target
