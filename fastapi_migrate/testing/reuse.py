"""``ReusedCopies``: a worker's copies of one template, each reset after a test and lent again.

A copy of a 200-table template costs PostgreSQL hundreds of milliseconds and MariaDB over a
second; a test that wrote a few rows is put back in a fraction of that. After each test the
server's ``restore`` either proves the database equal to a fresh copy (schema, grants, rows,
sequence values) and it is lent again, or says it cannot, and the database is dropped and
replaced by a new copy. Both happen in a background thread, on one of two databases, while the
next test runs on the other: a test waits only when the previous one took less time than a
reset. Where the server has no ``snapshot`` (SQLite, whose copy is a file copy), every test gets
a new copy, made on the spot.

Databases come first from the template's warm pool (``pool.WarmPool``), proven clean before a
test gets one; copies go into free slots of the pool. When the run ends, its databases, reset
and proven clean after their last test, stay in the pool for the next run; SQLite's are used
once, so the pool gets fresh file copies instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Protocol

from ..backends.base import DatabaseServer
from .pool import WarmPool


class Copier(Protocol):
    """What ``ReusedCopies`` needs of the janitor that owns the databases."""

    server: DatabaseServer

    def copy_kept(self, template: str) -> tuple[str, str]: ...

    def copy_into(self, template: str, name: str) -> None: ...

    def release(self, name: str) -> None: ...

    def drop(self, name: str) -> None: ...

    def drop_soon(self, name: str) -> None: ...

    def keep(self, name: str) -> None: ...


class ReusedCopies:
    """Copies of ``template`` lent to one test at a time (one instance per process)."""

    def __init__(self, copier: Copier, template: str, pool: WarmPool) -> None:
        self._copier = copier
        self._template = template
        self.pool = pool
        self._fresh: object | None = None
        self._fresh_unproven = False
        """Whether ``_fresh`` is the snapshot an earlier run saved and it has proven no database
        clean yet (it may be another version's): the next copy then gives a new one."""
        self._coming: deque[Future[str]] = deque()
        """Databases being reset or copied, each ready for a test once done."""
        self._background: ThreadPoolExecutor | None = None
        self.copies = 0
        """Copies made so far."""
        self.reuses = 0
        """Databases a test used, proven back in a fresh copy's state and lent again."""

    @contextmanager
    def borrow(self, keep: Callable[[], bool] | None = None) -> Iterator[str]:
        """The URL of a database in a fresh copy's state, this test's alone until the block
        ends; then reset for a later test, or dropped; or kept as it is, if ``keep()`` says
        so (``--migrate-keep-failed``)."""
        name = self._take()
        try:
            yield self._copier.server.url(name)
        finally:
            if keep is not None and keep():
                self._copier.keep(name)
                if name in self.pool.held:
                    self.pool.give_back(name)  # the kept list keeps other runs off it
            else:
                self._give_back(name)

    def settle(self) -> None:
        """Wait for the resets and copies under way (a benchmark's block ends there)."""
        for coming in list(self._coming):
            with suppress(Exception):
                coming.result()

    def _take(self) -> str:
        if self._coming:
            return self._coming.popleft().result()
        name = self._obtain()
        if self._fresh is not None:  # a second database, reset while the other is in use
            self._coming.append(self._submit(self._obtain))
        return name

    def _obtain(self) -> str:
        """A database in a fresh copy's state: a pooled one proven so, else a new copy."""
        server = self._copier.server
        if server.pool_proof == "restore" and self._fresh is None:
            self._fresh = self.pool.load_snapshot()
            self._fresh_unproven = self._fresh is not None
            if self._fresh is None:
                return self._copy()  # nothing to prove a pooled database against: a copy first
        while server.pool_proof is not None and (slot := self.pool.claim()) is not None:
            if server.pool_proof == "seal":
                clean = server.sealed(slot)
            else:
                clean = self._fresh is not None and server.restore(slot, self._fresh)
            if clean:
                self._fresh_unproven = False
                self.pool.taken += 1
                return slot
            self._discard(slot)  # not provably clean: dropped, the slot free again
        return self._copy()

    def _discard(self, slot: str) -> None:
        self._copier.release(slot)
        self.pool.discard(slot)

    def _copy(self) -> str:
        restores = self._copier.server.pool_proof == "restore"
        slot = self.pool.free_slot() if restores else None
        if slot is None:
            name, _url = self._copier.copy_kept(self._template)
        else:
            name = slot
            try:
                self._copier.copy_into(self._template, slot)
            except BaseException:
                self._discard(slot)
                raise
        self.copies += 1
        if self._fresh is None or self._fresh_unproven:
            self._fresh_unproven = False
            self._fresh = self._copier.server.snapshot(name)
            if self._fresh is not None:
                self.pool.save_snapshot(self._fresh)
        return name

    def _give_back(self, name: str) -> None:
        if self._fresh is None:
            if name in self.pool.held:  # dropped at once, before its slot is let go
                self._discard(name)
            else:
                self._copier.drop_soon(name)
            return
        self._coming.append(self._submit(self._recycle, name))

    def _recycle(self, name: str) -> str:
        assert self._fresh is not None
        if self._copier.server.restore(name, self._fresh):
            self._fresh_unproven = False
            self.reuses += 1
            return name
        if name in self.pool.held:
            self._discard(name)
        else:
            self._copier.drop(name)
        return self._obtain()

    def _submit(self, task: Callable[..., str], *args: str) -> Future[str]:
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="fastapi-migrate-reset")
        return self._background.submit(task, *args)

    def close(self) -> None:
        """Let the work under way end; leave the pooled databases proven clean in the pool
        (the janitor then drops every other database it made), and give SQLite's pool fresh
        copies for the next run."""
        ready = []
        for coming in list(self._coming):
            with suppress(Exception):
                ready.append(coming.result())
        self._coming.clear()
        if self._background is not None:
            self._background.shutdown()
            self._background = None
        for name in ready:
            if name in self.pool.held:
                self._copier.release(name)
                self.pool.give_back(name)
        if self._copier.server.pool_proof == "seal":
            self._refill(max(1, self.pool.taken))
        for name in list(self.pool.held):  # held but not proven clean: not worth keeping
            self._discard(name)

    def _refill(self, count: int) -> None:
        """Copy the template into ``count`` free slots, sealed: the next run's first databases."""
        for _ in range(count):
            slot = self.pool.free_slot()
            if slot is None:
                return
            try:
                self._copier.copy_into(self._template, slot)
                self._copier.server.seal(slot)
                self._copier.release(slot)
            finally:
                self.pool.give_back(slot)
