"""``ReusedCopies``: a worker's copies of one template, each reset after a test and lent again.

A copy of a 200-table template costs PostgreSQL hundreds of milliseconds and MariaDB over a
second; a test that wrote a few rows is put back in a fraction of that. After each test the
server's ``restore`` either proves the database equal to a fresh copy (schema, grants, rows,
sequence values) and it goes back to the idle list, or says it cannot, and the database is
dropped while a replacement is copied in the background, so the next test rarely waits. Where
the server has no ``snapshot`` (SQLite, whose copy is a file copy), every test gets a new copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Protocol

from ..backends.base import DatabaseServer

log = logging.getLogger("fastapi_migrate")


class Copier(Protocol):
    """What ``ReusedCopies`` needs of the janitor that owns the databases."""

    server: DatabaseServer

    def copy_kept(self, template: str) -> tuple[str, str]: ...

    def drop_soon(self, name: str) -> None: ...


class ReusedCopies:
    """Copies of ``template`` lent to one test at a time; not thread-safe (one per worker)."""

    def __init__(self, copier: Copier, template: str) -> None:
        self._copier = copier
        self._template = template
        self._fresh: object | None = None
        self._idle: list[str] = []
        self._spare: Future[str] | None = None
        self._background: ThreadPoolExecutor | None = None
        self.copies = 0
        """Copies made so far (the first included)."""
        self.reuses = 0
        """Tests that got a database an earlier test used, reset."""

    @contextmanager
    def borrow(self) -> Iterator[str]:
        """The URL of a database in a fresh copy's state, this test's alone until the block
        ends; then reset for the next test, or dropped."""
        name = self._take()
        try:
            yield self._copier.server.url(name)
        finally:
            self._give_back(name)

    def _take(self) -> str:
        if self._idle:
            self.reuses += 1
            return self._idle.pop()
        if self._spare is not None:
            spare, self._spare = self._spare, None
            return spare.result()
        return self._copy()

    def _copy(self) -> str:
        name, _url = self._copier.copy_kept(self._template)
        self.copies += 1
        if self.copies == 1:
            self._fresh = self._copier.server.snapshot(name)
        return name

    def _give_back(self, name: str) -> None:
        if self._fresh is not None and self._copier.server.restore(name, self._fresh):
            self._idle.append(name)
            return
        self._copier.drop_soon(name)
        if self._fresh is not None and self._spare is None:
            if self._background is None:
                self._background = ThreadPoolExecutor(1, thread_name_prefix="fastapi-migrate-copy")
            self._spare = self._background.submit(self._copy)

    def close(self) -> None:
        """Wait for a copy still being made (the janitor drops every database it made)."""
        if self._spare is not None:
            with suppress(Exception):
                self._spare.result()
            self._spare = None
        if self._background is not None:
            self._background.shutdown()
            self._background = None
