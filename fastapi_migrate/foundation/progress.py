"""Progress lines: a long migration, or a wait for another's, is visible while it runs.

One logger, ``fastapi_migrate.progress`` (a child of the app's ``fastapi_migrate``, so the app's
log shows it; the CLI's ``upgrade`` prints it on stderr): each revision when it starts and when
it ends with its duration, a line every ``PROGRESS_SECONDS`` while one runs or while a process
waits for the migration lock, and the DDL lock retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from alembic.script import ScriptDirectory

log = logging.getLogger("fastapi_migrate.progress")

PROGRESS_SECONDS = 30.0
"""A line this often while a revision runs, or while a process waits for the migration lock.
Read at each use (a module attribute), so that a test process may shorten it."""


def every_seconds() -> float:
    """``PROGRESS_SECONDS`` as it is now."""
    return PROGRESS_SECONDS


@contextmanager
def printed(stream: TextIO) -> Iterator[None]:
    """Within the block the progress lines are written to ``stream`` as they happen (the CLI's
    output, where nothing else shows the log)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@dataclass
class RevisionProgress:
    """The revisions of one plan as they run: ``applying 2/7 a0001 (add index)``, then
    ``applied 2/7 a0001 (add index) in 1.23s``; ``running()`` says which runs and since when."""

    script: ScriptDirectory
    pending: tuple[str, ...]
    prefix: str = ""  # "migration tree NAME: " with several trees
    _current: tuple[str, float] | None = field(default=None, init=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)

    def label(self, revision: str) -> str:
        """``2/7 a0001 (add index)``: its place in the plan, its id, its message."""
        position = (
            f"{self.pending.index(revision) + 1}/{len(self.pending)} "
            if revision in self.pending
            else ""
        )
        return f"{self.prefix}{position}{self.name(revision)}"

    def name(self, revision: str) -> str:
        """``a0001 (add index)``."""
        found = self.script.get_revision(revision)
        doc = (found.doc or "").strip().splitlines()[0] if found is not None and found.doc else ""
        return revision + (f" ({doc})" if doc else "")

    def started(self, revision: str) -> None:
        with self._guard:
            self._current = (revision, time.monotonic())
        log.info("applying %s", self.label(revision))

    def ended(self, revision: str, seconds: float) -> None:
        with self._guard:
            self._current = None
        log.info("applied %s in %.2fs", self.label(revision), seconds)

    def stopped(self) -> None:
        """The attempt ended (failed): no revision runs."""
        with self._guard:
            self._current = None

    def running(self) -> tuple[str, float] | None:
        """The revision running and when it started (``time.monotonic``), if one is."""
        with self._guard:
            return self._current
