"""``Backend``: what differs between databases, behind one interface chosen from the dialect.

Each database has one module (``postgresql``, ``mysql``, ``sqlite``) with one ``Backend``
subclass: its migration lock, DDL lock timeout, transactions, failure hints, backup and test
database copies. The rest of fastapi-migrate asks ``backend_for(dialect)`` and never branches on
the dialect itself. A dialect without a module gets this base class: no lock (a clear error
unless ``MIGRATE_LOCK=false``), no hints, no test databases.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, pool
from sqlalchemy.engine import URL

from ..core.errors import ConfigurationError
from ..core.redaction import mask_url
from .drivers import sync_url

T = TypeVar("T")

PREFIX = "fmpt_"
"""Every test database the plugin makes starts with this, so leftovers are recognizable."""


class Session(Protocol):
    """Something that runs a function on one server session (a kept connection)."""

    def run(self, fn: Callable[[Connection], T]) -> T: ...


class SessionLock(ABC):
    """The database half of the migration lock; ``core.lock`` polls, holds and releases it."""

    @abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""

    @abstractmethod
    def release(self) -> None:
        """Give it back; may raise if its connection died (the server released it then)."""

    def holder(self) -> str:
        """Who holds it, as ``"; held by ..."``, for the timeout's message; "" if unknown."""
        return ""

    def close(self) -> None:  # noqa: B027 - optional
        """Free what the lock opened, taken or not."""


@dataclass(frozen=True)
class Failure:
    """A migration that raised: what the failure hints look at."""

    error: BaseException
    what: str  # "revision r2", or "MIGRATE_EMPTY_DATABASE=create_all"
    revision: str | None  # the revision that failed, when known
    first_pending: str | None
    left_at: str | None  # the revisions the database is left at, if it could be read
    autocommit_block: bool  # the failed revision ran statements outside the transaction


class Backend:
    """The defaults, for a dialect fastapi-migrate has no module for."""

    lock_needs_connection = True
    """Whether the lock lives on a server session (else: a file, no connection)."""
    connect_errors_are_permanent = False
    """Whether a failed connection is final (no server that may come up later)."""
    connecting_is_cheap = False
    """Whether a new connection costs next to nothing (a file), so none is worth pooling."""
    environment_options: ClassVar[dict[str, Any]] = {}
    """What the ``env.py`` helper passes to ``context.configure`` on this database."""

    def __init__(self, name: str) -> None:
        self.name = name

    def engine_created(self, engine: Engine) -> None:
        """Adjust a new engine of ours (SQLite: transactional DDL)."""

    def session_lock(
        self, session: Session | None, url: URL, *, schema: str | None, table: str, variable: str
    ) -> SessionLock | None:
        """The migration lock for the version table ``schema.table``; None when none is needed
        (an in-memory database)."""
        raise ConfigurationError(
            f"fastapi-migrate has no migration lock for {self.name!r}; set MIGRATE_LOCK=false "
            "if only one process ever migrates this database"
        )

    def lock_timeout_statement(self, seconds: float) -> str | None:
        """The session statement that bounds a DDL statement's wait for a table lock."""
        return None

    def failure_hint(self, failure: Failure, session: Session) -> str:
        """What this database adds to a failed migration's message ("; ..."), or ""."""
        return ""

    def database_file(self, url: URL) -> Path | None:
        """The file the database lives in, where it is one (connecting may create it)."""
        return None

    def backup(self, url: URL, backup_dir: Path, label: str) -> Path | None:
        """A copy of the database made before any DDL, where it is a file; None elsewhere."""
        return None

    def test_server(self, url: URL, directory: Path) -> DatabaseServer:
        """Where the test plugin makes, copies and drops its databases."""
        raise ConfigurationError(
            f"--migrate-db-url / MIGRATE_TEST_DATABASE_URL: {mask_url(url)}: test databases "
            "can be made on SQLite, PostgreSQL and MySQL/MariaDB"
        )


# COMMIT / END / ROLLBACK as text end the test's transaction behind SQLAlchemy's back (what
# comes next runs outside it); ROLLBACK TO SAVEPOINT does not.
_ENDS_TRANSACTION = re.compile(r"\s*(COMMIT|END|ROLLBACK(?!\s+(WORK\s+)?TO\b))\b", re.IGNORECASE)


class DatabaseServer(ABC):
    """Where test databases live; names are plain identifiers made by the janitor."""

    slow_drop = True
    """Whether a drop costs enough server time to be worth doing in the background."""

    @abstractmethod
    def url(self, name: str) -> str:
        """The URL of database ``name``, with the driver the user gave."""

    @abstractmethod
    def create(self, name: str) -> str:
        """An empty database; its URL."""

    @abstractmethod
    def copy(self, template: str, name: str) -> str:
        """A new database with the template's schema and rows; its URL."""

    @abstractmethod
    def drop(self, name: str) -> None:
        """Drop the database, even with connections left open on it; no error if missing."""

    @abstractmethod
    def names(self) -> list[str]:
        """The databases on the server whose names start with ``PREFIX``."""

    def commits_by_itself(self, statement: str) -> bool:
        """Whether ``statement``, run inside a test's transaction, may make writes permanent
        that a rollback of that transaction would not undo."""
        return _ENDS_TRANSACTION.match(statement) is not None

    @abstractmethod
    def identity(self) -> str:
        """The dialect and server version: part of a kept template's key."""

    @abstractmethod
    def build_lock(self, name: str) -> AbstractContextManager[None]:
        """Hold a lock named ``name`` (blocking) that every process using this server sees:
        one of them builds a kept template, the others wait and then use it."""

    @abstractmethod
    def publish(self, building: str, final: str, mark: str) -> None:
        """Make the prepared template ``building`` available as ``final`` (replacing any),
        ready and marked with ``mark``, in a step no reader can see half-done."""

    @abstractmethod
    def ready_mark(self, name: str) -> str | None:
        """The mark ``publish`` gave template ``name``; None unless it is published."""

    def prepare_template(self, name: str) -> None:  # noqa: B027 - a hook, optional
        """Called once the template is migrated, before the first copy."""

    def close(self) -> None:  # noqa: B027 - a hook, optional
        """Release the server's connections."""


class ServerWithAdmin(DatabaseServer):
    """A database server reached through an autocommit connection to the URL's own database."""

    def __init__(self, url: URL, admin_pool: type[pool.Pool]) -> None:
        self._url = url
        self._admin: Engine = create_engine(
            sync_url(url), isolation_level="AUTOCOMMIT", poolclass=admin_pool
        )
        self._quote = self._admin.dialect.identifier_preparer.quote

    def url(self, name: str) -> str:
        return self._url.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        self._admin.dispose()
