"""SQLite: an OS file lock beside the database, transactional DDL, backups, file copies.

Python's sqlite3 does not emit ``BEGIN`` before DDL in its legacy mode, so Alembic assumes
SQLite DDL is not transactional and a failed revision leaves its tables behind. Our engines get
SQLAlchemy's documented fix (``isolation_level=None`` and a ``begin`` event that emits ``BEGIN``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import URL

from ..foundation.errors import ConfigurationError, MigrationError
from .base import PREFIX, Backend, DatabaseServer, Session, SessionLock


def enable_transactions(engine: Engine) -> None:
    """Make pysqlite emit BEGIN, so a failed revision's DDL rolls back (SQLAlchemy's recipe)."""

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    event.listen(engine, "begin", _emit_begin)


_IMMEDIATE = "fastapi_migrate_begin_immediate"


def _emit_begin(connection: Connection) -> None:
    # Not under AUTOCOMMIT (Alembic's autocommit_block): VACUUM and friends refuse a BEGIN.
    options = connection.get_execution_options()
    if options.get("isolation_level") != "AUTOCOMMIT":
        connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_IMMEDIATE) else "BEGIN")


def migrates_after_writers(connection: Connection, seconds: float) -> None:
    """Make a connection that runs revisions wait up to ``seconds`` for another writer.

    Its transactions begin with ``BEGIN IMMEDIATE``: a deferred one that has read and then
    writes gets ``database is locked`` at once while another process holds a write
    transaction (SQLite calls no busy handler there, to avoid a deadlock); taking the write
    lock first waits, as long as the busy timeout, set here to ``MIGRATE_LOCK_TIMEOUT``."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")
    finally:
        cursor.close()
    connection.execution_options(**{_IMMEDIATE: True})


def is_locked(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) is SQLite's busy timeout running out."""
    while error is not None:
        if "database is locked" in str(error) or "database table is locked" in str(error):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def emits_begin(connection: Connection) -> bool:
    """Make a connection ``env.py`` opened on an engine of its own (Alembic's templates build
    one from ``sqlalchemy.url``) emit BEGIN when it begins, as ours do; whether it does now.

    In its legacy mode pysqlite opens no transaction before DDL, so each ``CREATE TABLE`` would
    commit at once. An explicit BEGIN is enough (pysqlite then opens none of its own); the
    listener lives on this ``Connection`` only, never on the app's engine or pool. ``False`` for
    a connection already in a transaction begun without one."""
    if _emit_begin in list(connection.dispatch.begin):  # the engine's listeners, and its own
        return True
    if connection.in_transaction():
        return False
    event.listen(connection, "begin", _emit_begin)
    return True


def file_of(url: URL) -> Path | None:
    """The database's file; None for in-memory databases."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    path = database[5:] if database.startswith("file:") else database
    return Path(path.split("?", 1)[0])


def lock_path(url: URL) -> Path | None:
    """The lock file beside a SQLite database file; None for in-memory databases."""
    found = file_of(url)
    if found is None:
        return None
    return found.resolve().with_name(found.name + ".migrate-lock")


class FileLock(SessionLock):
    """``flock`` on a file beside the database: dies with the process, like a session lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Unbuffered: a write the disk refuses fails here, not again at close.
            self.handle = open(path, "a+b", buffering=0)  # noqa: SIM115 - open until close()
        except OSError as error:
            raise self._unusable(error) from None

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            self.handle.seek(0)
            self.handle.truncate(0)
            self.handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        except OSError as error:  # a full disk: the owner line cannot be written
            with suppress(OSError):
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            raise self._unusable(error) from None
        return True

    def _unusable(self, error: OSError) -> MigrationError:
        """The lock file's error, naming the file (an ``OSError`` alone names no path)."""
        return MigrationError(
            f"cannot use the migration lock file {self.path}: {error.strerror or error}; "
            "nothing was migrated (free space on its filesystem, or make its folder writable)"
        )

    def still_held(self) -> bool:
        """The file we lock must still be the one at its path: a cleanup job or a redeploy
        that removed or replaced it lets another process lock a new file."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self.handle.fileno())
        return (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev)

    def release(self) -> None:
        self.handle.truncate(0)
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)

    def holder(self) -> str:
        self.handle.seek(0)
        owner = self.handle.read().decode(errors="replace").strip()
        return (
            f"; held by {owner} (lock file {self.path})" if owner else f" (lock file {self.path})"
        )

    def close(self) -> None:
        self.handle.close()


class SQLite(Backend):
    lock_needs_connection = False
    connecting_is_cheap = True
    connect_errors_are_permanent = True  # a file that cannot be opened will not open later
    # ALTER TABLE through batch mode; and our connections emit BEGIN, so DDL is transactional.
    environment_options: ClassVar[dict[str, Any]] = {
        "render_as_batch": True,
        "transactional_ddl": True,
    }

    def engine_created(self, engine: Engine) -> None:
        enable_transactions(engine)

    def session_lock(
        self, session: Session | None, url: URL, *, schema: str | None, table: str, variable: str
    ) -> SessionLock | None:
        path = lock_path(url)
        return FileLock(path) if path is not None else None

    def database_file(self, url: URL) -> Path | None:
        return file_of(url)

    def backup(self, url: URL, backup_dir: Path, label: str) -> Path | None:
        found = file_of(url)
        return backup_file(str(found), backup_dir, label) if found is not None else None

    def test_server(self, url: URL, directory: Path) -> DatabaseServer:
        return SqliteServer(directory, url.drivername)


def _has_tables(connection: sqlite3.Connection) -> bool:
    row = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return bool(row and row[0])


def backup_file(database: str, backup_dir: Path, label: str) -> Path | None:
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
    # Written under another name and renamed once complete: a file with a backup's name is
    # always a whole backup (an empty one opens as a valid database, and a restore loses all).
    partial = target.with_name(target.name + ".partial")
    try:
        source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if not _has_tables(source):
                return None
            backup_dir.mkdir(parents=True, exist_ok=True)
            destination = sqlite3.connect(str(partial))
            try:
                source.backup(destination)
            finally:
                destination.close()
            os.replace(partial, target)
        finally:
            source.close()
    except (OSError, sqlite3.Error) as error:
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            with suppress(OSError):
                leftover.unlink()
        raise ConfigurationError(
            f"MIGRATE_BACKUP_DIR: could not back up {source_path} to {target} ({error}); "
            "nothing was migrated"
        ) from None
    return target


_SEAL_SUFFIX = ".fresh"
"""Beside a pooled copy: its size and modification time when it was made."""

_READY_SUFFIX = ".ready"
"""Beside a kept template's file: its mark; the template is published once both exist."""

_SUFFIXES = (_READY_SUFFIX, _SEAL_SUFFIX, "", "-wal", "-shm", "-journal", ".migrate-lock")
"""A database's files: dropped together."""


class SqliteServer(DatabaseServer):
    """SQLite files in one directory; a copy is a file copy."""

    slow_drop = False
    pool_proof = "seal"

    def __init__(self, directory: Path, drivername: str = "sqlite") -> None:
        self.directory = directory
        self.drivername = drivername
        directory.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, int] = {}
        """``hold``'s lock files, open: the OS releases their locks if this process dies."""

    def _stamp(self, name: str) -> str:
        found = self.path(name).stat()
        return f"{found.st_size} {found.st_mtime_ns} {found.st_ino}"

    def seal(self, name: str) -> None:
        seal = self.path(name).with_name(self.path(name).name + _SEAL_SUFFIX)
        seal.write_text(self._stamp(name))

    def sealed(self, name: str) -> bool:
        seal = self.path(name).with_name(self.path(name).name + _SEAL_SUFFIX)
        try:
            return seal.read_text() == self._stamp(name)
        except FileNotFoundError:
            return False

    def hold(self, name: str) -> bool:
        handle = os.open(self.directory / f"{name}.hold", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            return False
        self._held[name] = handle
        return True

    def let_go(self, name: str) -> None:
        handle = self._held.pop(name, None)
        if handle is not None:
            os.close(handle)  # closing the file releases its lock

    def close(self) -> None:
        for name in list(self._held):
            self.let_go(name)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.sqlite"

    def url(self, name: str) -> str:
        return f"{self.drivername}:///{self.path(name)}"

    def create(self, name: str) -> str:
        self.path(name).touch()  # an empty file is an empty SQLite database
        return self.url(name)

    def prepare_template(self, name: str) -> None:
        # A WAL-mode template keeps recent pages in its -wal file: fold them into the main file,
        # so copying that one file copies everything.
        connection = sqlite3.connect(self.path(name))
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()

    def copy(self, template: str, name: str) -> str:
        shutil.copyfile(self.path(template), self.path(name))
        return self.url(name)

    def drop(self, name: str) -> None:
        main = self.path(name)
        for suffix in _SUFFIXES:
            main.with_name(main.name + suffix).unlink(missing_ok=True)

    def identity(self) -> str:
        return f"sqlite {sqlite3.sqlite_version}"

    @contextmanager
    def build_lock(self, name: str) -> Iterator[None]:
        with open(self.directory / f"{name}.build-lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # freed by the OS if we die
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _mark_file(self, name: str) -> Path:
        return self.path(name).with_name(self.path(name).name + _READY_SUFFIX)

    def publish(self, building: str, final: str, mark: str) -> None:
        # The mark first, under the building's name; each rename is atomic, the file's last.
        self.drop(final)
        self._mark_file(building).write_text(mark)
        os.replace(self._mark_file(building), self._mark_file(final))
        os.replace(self.path(building), self.path(final))

    def ready_mark(self, name: str) -> str | None:
        if not self.path(name).is_file():
            return None
        try:
            return self._mark_file(name).read_text()
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob(f"{PREFIX}*.sqlite"))
