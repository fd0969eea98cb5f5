"""Shutdown signals that arrive while the lifespan migrates.

A server (uvicorn, gunicorn's workers, hypercorn) catches SIGTERM and SIGINT during startup and
only acts on them once startup is over: it would report "Application startup complete", open
its port, then shut down. A migration cannot be interrupted safely halfway, so it runs to the
end; but an app asked to stop while it migrated must not then report ready. ``noticing`` chains
a recorder in front of the server's own handler (which still runs, so the server still exits),
and the lifespan fails the startup when it caught anything.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, FrameType | None], Any]


class ShutdownDuringStartup(RuntimeError):
    """A shutdown signal arrived while the app migrated: the migration finished, and the app
    does not start (not a ``MigrationError``: nothing failed)."""


@contextmanager
def noticing() -> Iterator[list[int]]:
    """The shutdown signals received while the block runs, in order; the handlers that were
    installed keep running. Signals can only be handled in the main thread: elsewhere (a test
    client's portal thread) the list stays empty."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    installed: dict[signal.Signals, tuple[Handler, Handler]] = {}
    for sig in SHUTDOWN_SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous):  # SIG_DFL or SIG_IGN: no server listens, the OS acts
            continue
        recorder = _recorder(received, previous)
        signal.signal(sig, recorder)
        installed[sig] = (previous, recorder)
    try:
        yield received
    finally:
        for sig, (previous, recorder) in installed.items():
            if signal.getsignal(sig) is recorder:  # not replaced meanwhile by someone else
                signal.signal(sig, previous)


def _recorder(received: list[int], previous: Handler) -> Handler:
    def record(signum: int, frame: FrameType | None) -> Any:
        received.append(signum)
        return previous(signum, frame)

    return record


def names(received: list[int]) -> str:
    """``SIGTERM``, or ``SIGTERM, SIGINT``: what arrived, for the log."""
    return ", ".join(dict.fromkeys(signal.Signals(s).name for s in received))
