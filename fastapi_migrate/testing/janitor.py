"""``Janitor``: owns every database a test session makes on one server, and drops them all
but the project's kept template.

Names are ``fmpt_<host>_<pid>_<random>_<worker>_<n>``: unique per process and xdist worker, so
runs never collide, and a crashed run's leftovers are recognizable: the next run on the same
host drops those whose process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import secrets
import socket
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData

# Every server's backend, imported with the plugin at pytest's start (``backend_for`` imports
# them on first use): a module first imported inside pytester's inner run is taken out of
# ``sys.modules`` after it, and the snapshots of its classes then no longer pickle nor match.
from ..backends import backend_for, mysql, postgresql  # noqa: F401
from ..backends.base import PREFIX, DatabaseServer
from ..backends.drivers import parse_url
from ..backends.sqlite import SqliteServer
from ..engine.start import migrate
from ..foundation.errors import DatabaseUnavailable
from ..foundation.result import MigrationResult
from ..foundation.settings import MigrateSettings
from .pool import WarmPool, drop_other_pools, drop_pool, is_slot
from .reuse import ReusedCopies
from .server_choice import server_url
from .server_errors import server_failure
from .template_key import template_key

log = logging.getLogger("fastapi_migrate")
# PostgreSQL's DROP DATABASE waits for a checkpoint; drops running side by side share one.
_DROP_THREADS = 4
# Drops may lag behind copies by this many before a test waits for them.
_MAX_PENDING_DROPS = 8


def host_tag() -> str:
    """Six hex digits of this host's name: whose leftovers a run may judge."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


_NAME = re.compile(rf"^{PREFIX}(?P<host>[0-9a-f]{{6}})_(?P<pid>\d+)_")


def is_stale(name: str) -> bool:
    """Whether ``name`` was made on this host by a process that no longer exists."""
    match = _NAME.match(name)
    if match is None or match["host"] != host_tag():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def database_server(url: str | None, directory: Path) -> DatabaseServer:
    """The server a URL names; ``None`` means SQLite files in ``directory`` (for a SQLite URL
    only its driver counts: ``sqlite+aiosqlite://`` gives aiosqlite URLs)."""
    if not url:
        return SqliteServer(directory)
    parsed = parse_url(url, "--migrate-db-url")
    return backend_for(parsed.get_backend_name()).test_server(parsed, directory)


class Janitor:
    """Makes, copies and drops this process's test databases on ``server``."""

    def __init__(
        self, server: DatabaseServer, worker: str = "main", kept_list: Path | None = None
    ) -> None:
        self.server = server
        self._kept_list = kept_list
        """A file naming the databases kept for a developer to look at (one a line): a later
        run's cleanup leaves them alone."""
        worker = re.sub(r"[^a-z0-9]", "", worker.lower())[:8] or "main"
        self._stem = f"{PREFIX}{host_tag()}_{os.getpid()}_{secrets.token_hex(3)}_{worker}"
        self._numbers = itertools.count(1)
        self._live: set[str] = set()
        self._dropper: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._reused: dict[str, ReusedCopies] = {}
        self.stale_dropped = self.drop_stale()

    def _new_name(self, label: str | None = None) -> str:
        return f"{self._stem}_{label or next(self._numbers)}"

    @property
    def folder(self) -> Path | None:
        """Where this project's test state is kept between runs (pytest's cache folder)."""
        return None if self._kept_list is None else self._kept_list.parent

    def drop_stale(self) -> list[str]:
        """Drop databases left by dead processes of this host (a crashed or killed run)."""
        kept = self.kept()
        dropped = [name for name in self.server.names() if is_stale(name) and name not in kept]
        for name in dropped:
            self.server.drop(name)
        return dropped

    def create(self, label: str | None = None) -> tuple[str, str]:
        """A new empty database: its name and URL."""
        name = self._new_name(label)
        self._live.add(name)
        return name, self.server.create(name)

    def drop(self, name: str) -> None:
        self.server.drop(name)
        self._live.discard(name)

    def kept(self) -> set[str]:
        """The databases kept by ``keep`` in this or an earlier run."""
        if self._kept_list is None or not self._kept_list.is_file():
            return set()
        return set(self._kept_list.read_text().split())

    def keep(self, name: str) -> None:
        """Leave ``name`` as it is, never dropped by this run nor cleaned up by a later one
        (``--migrate-keep-failed``); the developer drops it."""
        self._live.discard(name)
        if self._kept_list is not None:
            with self._kept_list.open("a") as listing:
                listing.write(f"{name}\n")

    def drop_soon(self, name: str) -> None:
        """Drop in background threads where a drop costs server work (a checkpoint on
        PostgreSQL), so the next test need not wait for it; ``close`` waits, and retries any
        that failed."""
        if not self.server.slow_drop:
            self.drop(name)
            return
        if self._dropper is None:
            self._dropper = ThreadPoolExecutor(
                _DROP_THREADS, thread_name_prefix="fastapi-migrate-drop"
            )
        self._pending.append(self._dropper.submit(self._drop_quietly, name))
        while self._pending and (
            len(self._pending) > _MAX_PENDING_DROPS or self._pending[0].done()
        ):
            self._pending.popleft().result()

    def wait_for_drops(self) -> None:
        """Return once the background drops asked for so far are done."""
        while self._pending:
            self._pending.popleft().result()

    def _drop_quietly(self, name: str) -> None:
        try:
            self.drop(name)
        except Exception as error:  # still in _live: close() drops it again, and raises
            log.warning("could not drop test database %s (retried at the end): %s", name, error)

    @contextmanager
    def empty_database(self) -> Iterator[str]:
        """The URL of a new empty database, dropped afterwards."""
        name, url = self.create()
        try:
            yield url
        finally:
            self.drop(name)

    def migrated_template(
        self, settings: MigrateSettings, *, metadata: MetaData | None = None
    ) -> MigratedTemplate:
        """A database brought to the target by ``migrate`` under the user's settings."""
        name, url = self.create("tpl")
        try:
            result = migrate(template_settings(settings, url), metadata=metadata)
            self.server.prepare_template(name)
        except BaseException:
            self.drop(name)
            raise
        return MigratedTemplate(self, name, url, result)

    def kept_template(
        self, settings: MigrateSettings, *, run: str, rebuild: bool = False
    ) -> MigratedTemplate:
        """The project's template for these migrations, kept on the server between runs.

        Named after what decides its schema (``template_key``): found ready, it is used as it
        is, without running a migration. Else one process builds it under a temporary name,
        holding the server's build lock (the others wait for it, then find it ready), publishes
        it, and drops the project's templates of other keys. ``rebuild``: build it again unless
        this run (``run``: one id shared by its xdist workers) already did.
        """
        family, key = template_key(settings, self.server.identity())
        final = f"{family}_{key}"

        def usable() -> bool:
            mark = self.server.ready_mark(final)
            return mark is not None and (not rebuild or mark == run)

        if usable():
            return MigratedTemplate(self, final, self.server.url(final), None)
        with self.server.build_lock(family):
            if usable():  # built by another process while we waited
                return MigratedTemplate(self, final, self.server.url(final), None)
            building, url = self.create("build")
            try:
                result = migrate(template_settings(settings, url))
                self.server.prepare_template(building)
                self.server.publish(building, final, run)
            except BaseException:
                self.drop(building)
                raise
            self._live.discard(building)
            drop_pool(self.server, final, self.folder)  # of an earlier build of this key
            drop_other_pools(self.server, family, final)
            for old in self.server.names():
                if old.startswith(f"{family}_") and old != final and not is_slot(old):
                    self.server.drop(old)
        return MigratedTemplate(self, final, self.server.url(final), result)

    def reused_copies(self, template: str) -> ReusedCopies:
        """This process's copies of ``template``, reset between tests where the server can,
        taken from and left in its warm pool."""
        if template not in self._reused:
            pool = WarmPool(self.server, template, self.folder, self.kept())
            self._reused[template] = ReusedCopies(self, template, pool)
        return self._reused[template]

    def copy_into(self, template: str, name: str) -> None:
        """Copy ``template`` to ``name`` (a pool's slot this process holds), alive until
        ``release``, ``drop_soon`` or ``close``."""
        self._live.add(name)
        self.server.copy(template, name)

    def release(self, name: str) -> None:
        """Leave ``name`` on the server when this janitor closes (given back to the pool)."""
        self._live.discard(name)

    def copy_kept(self, template: str) -> tuple[str, str]:
        """A new copy of ``template`` that lives until ``drop_soon`` or ``close``: its name
        and URL."""
        name = self._new_name()
        self._live.add(name)
        return name, self.server.copy(template, name)

    def close(self) -> None:
        """Drop everything still alive, template included; release the server's connections."""
        try:
            self.drop_all()
        finally:
            self.server.close()

    def drop_all(self) -> None:
        """Drop everything this janitor made that is still alive; the server stays open (a
        benchmark's suites share it)."""
        for copies in self._reused.values():
            copies.close()
        self.wait_for_drops()
        if self._dropper is not None:
            self._dropper.shutdown()
            self._dropper = None
        for name in sorted(self._live):
            self.drop(name)
            if name in self._reused:  # a template of this run alone: its pool goes with it
                drop_pool(self.server, name, self.folder)


@dataclass(frozen=True)
class MigratedTemplate:
    """The session's database at the target revision; tests get copies of it, never it."""

    janitor: Janitor
    name: str
    url: str
    result: MigrationResult | None
    """What migrating it did; None for a template kept from an earlier run."""

    @contextmanager
    def copy(self, keep: Callable[[], bool] | None = None) -> Iterator[str]:
        """A database in a fresh copy's state for one test: new, or reset after another; kept
        as the test left it if ``keep()`` says so after the block."""
        with self.janitor.reused_copies(self.name).borrow(keep) as url:
            yield url


def template_settings(settings: MigrateSettings, url: str) -> MigrateSettings:
    """The user's settings aimed at ``url``: migrate it now, whatever mode the app runs in."""
    return settings.model_copy(
        update={
            "database_url": url,
            "migrate_database_url": None,
            "mode": "upgrade",
            "backup_dir": None,
        }
    )


@contextmanager
def scratch_database(url: str | None = None) -> Iterator[str]:
    """``url`` itself when given, else a new empty database on the test server, dropped after."""
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="fastapi-migrate-") as tmp:
        made = _scratch_on_server(Path(tmp))
        if isinstance(made, str):  # out of the except block: no driver frame in the traceback
            raise DatabaseUnavailable(made) from None
        janitor, name, fresh = made
        try:
            yield fresh
        finally:
            try:
                janitor.drop(name)
            finally:
                janitor.close()


def _scratch_on_server(folder: Path) -> tuple[Janitor, str, str] | str:
    """A janitor and a new empty database on the test server (its name and URL), or the line
    saying why not."""
    janitor: Janitor | None = None
    try:
        janitor = Janitor(database_server(server_url(), folder))
        name, fresh = janitor.create()
        return janitor, name, fresh
    except Exception as error:
        if not server_url():
            raise  # SQLite files: no secret to hide, and the traceback helps
        failure = server_failure(error)
    if janitor is not None:
        with contextlib.suppress(Exception):
            janitor.close()
    return failure
