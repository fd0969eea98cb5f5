"""``Backend``: what differs between databases, behind one interface chosen from the dialect.

Each database has one module (``postgresql``, ``mysql``, ``sqlite``) with one ``Backend``
subclass: its migration lock, DDL lock timeout, transactions, failure hints, backup and test
database copies. The rest of fastapi-migrate asks ``backend_for(dialect)`` and never branches on
the dialect itself. A dialect without a module gets this base class: no lock (a clear error
unless ``MIGRATE_LOCK=false``), no hints, no test databases.
"""

from __future__ import annotations

import graphlib
import logging
import re
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc, pool, text
from sqlalchemy.engine import URL

from ..foundation.errors import ConfigurationError
from ..foundation.redaction import mask_url
from ..foundation.retry import heals_by_waiting
from .drivers import sync_url

T = TypeVar("T")
log = logging.getLogger("fastapi_migrate")

# TCP keepalives on the lock's and the migrations' connections: a probe after 30 s of silence
# keeps load balancers and NATs (4 to 6 minutes idle) from dropping the flow, and a dead peer is
# noticed after about a minute (30 + 3 x 10 s) instead of the kernel's two hours.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3

PREFIX = "fmpt_"
"""Every test database the plugin makes starts with this, so leftovers are recognizable."""


class Session(Protocol):
    """Something that runs a function on one server session (a kept connection)."""

    def run(self, fn: Callable[[Connection], T]) -> T: ...


class SessionLock(ABC):
    """The database half of the migration lock; ``engine.lock`` polls, holds and releases it."""

    @abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""

    @abstractmethod
    def release(self) -> None:
        """Give it back; may raise if its connection died (the server released it then)."""

    def holder(self) -> str:
        """Who holds it, as ``"; held by ..."``, for the timeout's message; "" if unknown."""
        return ""

    def still_held(self) -> bool:
        """Whether the lock is still ours (asked while migrating); may raise if its connection
        died. Also the heartbeat that keeps its session from looking idle."""
        return True

    def close(self) -> None:  # noqa: B027 - optional
        """Free what the lock opened, taken or not."""

    def not_held(self) -> str:
        """Why the migration stops when ``still_held`` said no."""
        return "the database no longer shows it held by this process"


@dataclass(frozen=True)
class Blocker:
    """A session that held up a migration's statement: who it is, never what it ran."""

    pid: int
    application: str  # PostgreSQL's application_name; MySQL/MariaDB: user@host
    state: str
    transaction_seconds: float | None  # how long its transaction has been open

    def describe(self) -> str:
        open_for = (
            "no transaction open"
            if self.transaction_seconds is None
            else f"transaction open {self.transaction_seconds:.1f}s"
        )
        who = f"application {self.application or '?'}, state {self.state or '?'}"
        return f"pid {self.pid} ({who}, {open_for})"


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

    transactional_ddl = True
    """Whether a failed migration's DDL rolls back (else each statement commits by itself)."""
    lock_needs_connection = True
    """Whether the lock lives on a server session (else: a file, no connection)."""
    connect_errors_are_permanent = False
    """Whether a failed connection is final (no server that may come up later)."""
    transient_messages: ClassVar[tuple[str, ...]] = (
        "connection refused",
        "connection reset",
        "timed out",
        "timeout expired",
        "no answer within",
        "too many connections",
        "too many clients",
        "name or service not known",
        "temporary failure in name resolution",
        "nodename nor servname",
        "network is unreachable",
        "no route to host",
        "broken pipe",
    )
    """Lower-case parts of a driver's message for a failed connection that waiting may fix."""
    connecting_is_cheap = False
    """Whether a new connection costs next to nothing (a file), so none is worth pooling."""
    max_identifier_length: int | None = None
    """The longest table or schema name the database takes (None: no limit that matters)."""
    environment_options: ClassVar[dict[str, Any]] = {}
    """What the ``env.py`` helper passes to ``context.configure`` on this database."""
    clock_sql: ClassVar[str | None] = None
    """SQL for the database's clock in seconds since the epoch, for the lease's expiry; None:
    no lease on this database."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check_url(self, url: URL, variable: str) -> None:
        """Refuse, before any connection, what the driver would fail on obscurely."""

    def engine_created(self, engine: Engine) -> None:
        """Adjust a new engine of ours: TCP keepalives (SQLite: transactional DDL instead)."""

        @event.listens_for(engine, "do_connect")
        def _keepalive_params(dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
            self.connect_params(dialect.driver, cparams)

        @event.listens_for(engine, "connect")
        def _keepalive_socket(dbapi_connection: Any, _record: Any) -> None:
            self.connected(dbapi_connection)

    def connect_error_heals(self, error: BaseException) -> bool:
        """Whether another connection attempt may succeed where this one failed: a server down,
        restarting, full or not yet resolvable. Anything else fails at once (a password, a
        missing database, a file the driver cannot read, TLS), however long the timeout."""
        if self.connect_errors_are_permanent:
            return False
        original = getattr(error, "orig", None) or error  # a DBAPIError: the driver's own
        by_os = heals_by_waiting(original)
        if by_os is not None:
            return by_os
        return self.driver_error_heals(original)

    def driver_error_heals(self, error: BaseException) -> bool:
        """``connect_error_heals`` for a driver's own exception (not an ``OSError``): by its
        message, a whitelist (an error nobody listed is not waited for)."""
        text = str(error).lower()
        return any(marker in text for marker in self.transient_messages)

    def session_lock(
        self, session: Session | None, url: URL, *, schema: str | None, table: str, variable: str
    ) -> SessionLock | None:
        """The migration lock for the version table ``schema.table``; None when none is needed
        (an in-memory database)."""
        raise ConfigurationError(
            f"fastapi-migrate has no migration lock for {self.name!r}; set MIGRATE_LOCK=false "
            "if only one process ever migrates this database"
        )

    def session_lock_doubt(self, session: Session | None, url: URL, variable: str) -> str | None:
        """Why the session lock cannot be trusted on this connection (with ``MIGRATE_LOCK=true``
        the lease is taken instead), or None when it can."""
        return None

    def lock_timeout_statement(self, seconds: float) -> str | None:
        """The session statement that bounds a DDL statement's wait for a table lock."""
        return None

    session_id_statement: ClassVar[str | None] = None
    """The query that gives a session's id, as ``lock_blockers`` takes it (None: no such id)."""

    def lock_blockers(self, connection: Connection, session_id: int) -> list[Blocker]:
        """The sessions that the session ``session_id`` waits for, read from ``connection`` (another
        session) while it waits; [] where the database cannot tell."""
        return []

    def keep_alive_statements(self) -> list[str]:
        """Session statements that stop the server from closing a migration's or the lock's
        session for being idle (a slow revision, a lock held while another session works)."""
        return []

    def connect_params(self, driver: str, params: dict[str, Any]) -> None:
        """Add TCP keepalives to a connection's parameters, for drivers that take them."""

    def connected(self, dbapi_connection: Any) -> None:
        """Turn on TCP keepalives on a new connection's socket, for drivers that take no
        parameter for them."""

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
    pool_proof: ClassVar[str | None] = None
    """How a database kept in the warm pool between runs is proven clean before a test gets
    it: ``"restore"`` (against a fresh copy's snapshot, as after a test), ``"seal"`` (nobody
    wrote to the file since it was copied), or None: no pool."""

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

    def snapshot(self, name: str) -> object | None:
        """What ``name``, a fresh copy nobody has used, looks like, for ``restore``; None where
        a copy is cheap enough that tests always get a new one (SQLite: a file copy)."""
        return None

    def restore(self, name: str, fresh: object) -> bool:
        """After a test: bring ``name`` back to ``fresh`` (from ``snapshot``) and return True;
        False when that cannot be proven, and the caller drops it."""
        return False

    def seal(self, name: str) -> None:  # noqa: B027 - a hook, optional
        """Record that ``name``, a new copy, is untouched (where no ``restore`` can prove it)."""

    def sealed(self, name: str) -> bool:
        """Whether ``name`` is still as ``seal`` recorded it: nobody wrote to it since."""
        return False

    def hold(self, name: str) -> bool:
        """Take, without waiting, a lock named ``name`` that every process using this server
        sees, kept until ``let_go`` or this process's end (the warm pool's slots); False when
        another process holds it, or the server keeps no pool."""
        return False

    def let_go(self, name: str) -> None:  # noqa: B027 - a hook, optional
        """Release what ``hold`` took."""

    def close(self) -> None:  # noqa: B027 - a hook, optional
        """Release the server's connections."""


class ServerWithAdmin(DatabaseServer):
    """A database server reached through an autocommit connection to the URL's own database."""

    pool_proof = "restore"

    def __init__(
        self, url: URL, admin_pool: type[pool.Pool], connect_args: dict[str, Any] | None = None
    ) -> None:
        self._url = url
        self._connect_args = connect_args or {}
        """What the server's own blocking connections add to the URL's."""
        self._admin: Engine = create_engine(
            sync_url(url),
            isolation_level="AUTOCOMMIT",
            poolclass=admin_pool,
            connect_args=self._connect_args,
        )
        self._quote = self._admin.dialect.identifier_preparer.quote
        self._known: dict[str, object] = {}
        """Per reused database: what ``_restore`` saw when it last proved it clean."""
        self._holder: Connection | None = None
        """The session that holds ``hold``'s locks: they go with it if this process dies."""
        self._holding = threading.Lock()

    _hold_sql: ClassVar[str | None] = None
    """A session lock taken without waiting, true when taken; ``:k`` is ``_hold_key``."""
    _let_go_sql: ClassVar[str] = ""

    def _hold_key(self, name: str) -> object:
        return name

    def hold(self, name: str) -> bool:
        if self._hold_sql is None:
            return False
        with self._holding:
            if self._holder is None:
                self._holder = self._admin.connect()
            taken = self._holder.execute(text(self._hold_sql), {"k": self._hold_key(name)})
            return bool(taken.scalar())

    def let_go(self, name: str) -> None:
        self._known.pop(name, None)
        with self._holding:
            if self._holder is not None:
                self._holder.execute(text(self._let_go_sql), {"k": self._hold_key(name)})

    def snapshot(self, name: str) -> object | None:
        try:
            return self._snapshot(name)
        except exc.SQLAlchemyError as error:  # a table we may not read: copy for every test
            log.warning("test databases will not be reused: %s", error)
            return None

    def restore(self, name: str, fresh: object) -> bool:
        try:
            known = self._restore(name, fresh, self._known.get(name))
        # ValueError: what the server answered cannot be read (a listing cut short).
        except (exc.SQLAlchemyError, TimeoutError, ValueError) as error:
            log.debug("test database %s not reused: %s", name, error)
            known = None
        if known is None:
            self._known.pop(name, None)
            return False
        self._known[name] = known
        return True

    def _snapshot(self, name: str) -> object | None:
        """``snapshot`` without the error handling; None: no reuse on this server."""
        return None

    def _restore(self, name: str, fresh: object, known: object | None) -> object | None:
        """``restore``: what to pass as ``known`` next time (the database was proven clean),
        or None (drop it). ``known``: None for a database not yet reset."""
        return None

    def url(self, name: str) -> str:
        return self._url.set(database=name).render_as_string(hide_password=False)

    @contextmanager
    def connect_to(self, name: str) -> Iterator[Connection]:
        """A new session on database ``name`` (not the admin's), closed afterwards."""
        engine = create_engine(sync_url(self.url(name)), poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def close(self) -> None:
        with self._holding:
            if self._holder is not None:
                self._holder.close()  # its locks go with its session
                self._holder = None
        self._admin.dispose()


def socket_of(dbapi_connection: Any) -> socket.socket | None:
    """The TCP socket under a driver's connection (PyMySQL; asyncpg and aiomysql through
    SQLAlchemy's adapter), or None where it cannot be found."""
    for path in ("_sock", "_connection._sock"):
        found: Any = dbapi_connection
        for name in path.split("."):
            found = getattr(found, name, None)
        if isinstance(found, socket.socket):
            return found
    inner = getattr(dbapi_connection, "_connection", None)
    for attribute in ("_transport", "_writer"):
        transport = getattr(inner, attribute, None)
        extra = getattr(transport, "get_extra_info", None)
        if extra is not None:
            found = extra("socket")
            if found is not None and hasattr(found, "setsockopt"):
                return found  # type: ignore[no-any-return]
    return None


def enable_keepalive(dbapi_connection: Any) -> None:
    """TCP keepalives on the connection's socket, where the platform has the options."""
    sock = socket_of(dbapi_connection)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:  # a socket that refuses options is left as it was
        pass


def children_first(tables: list[str], references: list[tuple[Any, ...]]) -> tuple[str, ...]:
    """``tables`` ordered so that a table comes before every table it references; with a cycle
    of foreign keys, as they are (deleting from such tables fails: the database is copied)."""
    referenced_by: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in references:
        if child in referenced_by and parent in referenced_by:
            referenced_by[parent].add(child)
    try:
        return tuple(graphlib.TopologicalSorter(referenced_by).static_order())
    except graphlib.CycleError:
        return tuple(tables)
