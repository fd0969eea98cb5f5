"""``WarmPool``: clean databases of the current template, kept on the server between runs.

As integresql's pool does, a rerun gets a database that is already there instead of copying
the template: the databases a run used, reset and proven back in a fresh copy's state after
their last test, stay on the server under slot names, ``<template>_p1`` to ``_p8``. A slot is
held through a lock on the server (a session advisory lock on PostgreSQL, ``GET_LOCK`` on
MariaDB, a file lock for SQLite files), taken without waiting: a process that dies lets go of
its slots with its session, so xdist workers and concurrent runs never share one, and nothing
stays held. A held slot is its holder's alone: to create, use, reset or drop.

What a slot holds is never trusted: a run killed mid-test leaves its database dirty there.
Before a test gets a pooled database it goes through the same proof as a database reset after
a test (``DatabaseServer.restore`` against the snapshot of a fresh copy, kept in the pytest
cache folder: schema, rows, counters; a dirty database is put back or dropped). SQLite files
cannot be reset: a pooled file is one copied at the end of an earlier run and never opened
since (its size and modification time as sealed then), and is dropped after its test.

The slots are named after the template, whose name is the key of what decides its schema:
another history gives another template, whose build drops the old one's pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
from pathlib import Path

from ..backends.base import PREFIX, DatabaseServer

log = logging.getLogger("fastapi_migrate")

POOL_SIZE = 8
"""Slots per template: databases kept between runs at most (two per xdist worker in use)."""

_SLOT = re.compile(rf"^{PREFIX}tpl_.*_p\d+$")


def slot_names(template: str) -> list[str]:
    return [f"{template}_p{n}" for n in range(1, POOL_SIZE + 1)]


def is_slot(name: str) -> bool:
    """Whether ``name`` is a pooled database (of any template)."""
    return _SLOT.match(name) is not None


SNAPSHOT_FORMAT = 2
"""Bumped whenever what a server's ``snapshot`` holds changes meaning (2: MariaDB's fingerprint
of the other objects is read in one statement): an earlier version's file would unpickle, and
then prove no database clean, run after run."""


class WarmPool:
    """This process's view of one template's pool on ``server``."""

    def __init__(
        self, server: DatabaseServer, template: str, folder: Path | None, kept: set[str]
    ) -> None:
        self.server = server
        self.template = template
        self._folder = folder
        self._kept = kept
        self.held: set[str] = set()
        """The slots this process holds (their databases are its own until given back)."""
        self.taken = 0
        """Pooled databases proven clean and handed out (a rerun's databases)."""

    def _snapshot_file(self) -> Path | None:
        if self._folder is None:
            return None
        server = hashlib.sha256(self.server.url("").encode()).hexdigest()[:8]
        return self._folder / f"{self.template}.{server}.v{SNAPSHOT_FORMAT}.snapshot"

    def load_snapshot(self) -> object | None:
        """The snapshot of a fresh copy an earlier run saved, or None."""
        path = self._snapshot_file()
        if path is None or not path.is_file():
            return None
        try:
            found: object = pickle.loads(path.read_bytes())  # this plugin's, in its cache folder
        except Exception:  # a file cut short, another version's classes: take a new one
            return None
        return found

    def save_snapshot(self, fresh: object) -> None:
        path = self._snapshot_file()
        if path is None:
            return
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(pickle.dumps(fresh))
            os.replace(partial, path)  # a reader sees the old file or the new one, whole
        # A read-only cache, or classes pickle cannot find again: the next run copies once more.
        except (OSError, pickle.PicklingError) as error:
            log.debug("the warm pool's snapshot was not saved: %s", error)

    def claim(self) -> str | None:
        """A slot holding a database, now held by this process (prove it before use); None
        when every pooled database is held by others, or there is none."""
        existing = set(self.server.names())
        for slot in slot_names(self.template):
            free = slot in existing and slot not in self._kept and slot not in self.held
            if free and self.server.hold(slot):
                self.held.add(slot)
                return slot
        return None

    def free_slot(self) -> str | None:
        """A slot with no database, now held by this process (copy into it); None when the
        pool is full."""
        existing = set(self.server.names())
        for slot in slot_names(self.template):
            if slot in existing or slot in self._kept or slot in self.held:
                continue
            if not self.server.hold(slot):
                continue
            if slot in self.server.names():  # made and given back meanwhile: not free
                self.server.let_go(slot)
                continue
            self.held.add(slot)
            return slot
        return None

    def give_back(self, slot: str) -> None:
        """Leave the slot's database in the pool for a later test or run."""
        self.held.discard(slot)
        self.server.let_go(slot)

    def discard(self, slot: str) -> None:
        """Drop the slot's database (it could not be proven clean), and let go of the slot."""
        try:
            self.server.drop(slot)
        finally:
            self.give_back(slot)


def drop_other_pools(server: DatabaseServer, family: str, keep: str) -> None:
    """Drop the pooled databases of the project's templates but ``keep`` (the current one),
    and ``keep``'s too when it was just rebuilt by its caller; a slot another process holds is
    left alone (its run still uses it; the next build drops it)."""
    for name in server.names():
        if not name.startswith(f"{family}_") or not is_slot(name) or name.startswith(f"{keep}_p"):
            continue
        if server.hold(name):
            try:
                server.drop(name)
            finally:
                server.let_go(name)


def drop_pool(server: DatabaseServer, template: str, folder: Path | None) -> None:
    """Drop every slot of ``template`` no other process holds, and its saved snapshot (the
    template was built again: what the pool holds may be of the old build)."""
    for slot in slot_names(template):
        if slot in server.names() and server.hold(slot):
            try:
                server.drop(slot)
            finally:
                server.let_go(slot)
    if folder is not None:
        for path in folder.glob(f"{template}.*.snapshot"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
