"""``ReusedCopies``: a worker's copies of one template, each reset after a test and lent again.

A copy of a 200-table template costs PostgreSQL hundreds of milliseconds and MariaDB over a
second; a test that wrote a few rows is put back in a fraction of that. After each test the
server's ``restore`` either proves the database equal to a fresh copy (schema, grants, rows,
sequence values) and it is lent again, or says it cannot, and the database is dropped and
replaced by a new copy. Both happen in a background thread, on one of two databases, while the
next test runs on the other: a test waits only when the previous one took less time than a
reset. Where the server has no ``snapshot`` (SQLite, whose copy is a file copy), every test gets
a new copy, made on the spot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Protocol

from ..backends.base import DatabaseServer


class Copier(Protocol):
    """What ``ReusedCopies`` needs of the janitor that owns the databases."""

    server: DatabaseServer

    def copy_kept(self, template: str) -> tuple[str, str]: ...

    def drop(self, name: str) -> None: ...

    def drop_soon(self, name: str) -> None: ...

    def keep(self, name: str) -> None: ...


class ReusedCopies:
    """Copies of ``template`` lent to one test at a time (one instance per process)."""

    def __init__(self, copier: Copier, template: str) -> None:
        self._copier = copier
        self._template = template
        self._fresh: object | None = None
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
        name = self._copy()
        if self._fresh is not None:  # a second database, reset while the other is in use
            self._coming.append(self._submit(self._copy))
        return name

    def _copy(self) -> str:
        name, _url = self._copier.copy_kept(self._template)
        self.copies += 1
        if self.copies == 1:
            self._fresh = self._copier.server.snapshot(name)
        return name

    def _give_back(self, name: str) -> None:
        if self._fresh is None:
            self._copier.drop_soon(name)
            return
        self._coming.append(self._submit(self._recycle, name))

    def _recycle(self, name: str) -> str:
        assert self._fresh is not None
        if self._copier.server.restore(name, self._fresh):
            self.reuses += 1
            return name
        self._copier.drop(name)
        return self._copy()

    def _submit(self, task: Callable[..., str], *args: str) -> Future[str]:
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="fastapi-migrate-reset")
        return self._background.submit(task, *args)

    def close(self) -> None:
        """Let the work under way end (the janitor then drops every database it made)."""
        self.settle()
        self._coming.clear()
        if self._background is not None:
            self._background.shutdown()
            self._background = None
