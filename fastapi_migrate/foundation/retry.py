"""``poll``: the one retry loop (connecting, taking the lock, waiting for another's migration).

Jittered exponential backoff, so that replicas started together spread out. The constants:

- ``FIRST_DELAY`` 50 ms: the common wait (another process finishing a short migration) ends
  within a few attempts;
- ``GROWTH`` 1.5 per attempt, up to a cap that depends on what an attempt costs:
- ``POLL_CAP`` 0.5 s where an attempt is a query on a connection already open (the lock, the
  version table): a waiter notices the end of another's migration within half a second;
- ``CONNECT_CAP`` 2 s where an attempt opens a connection to a server that may be down or
  restarting: dozens of replicas must not hammer it.

``heals_by_waiting`` says which failed connections are worth another attempt: only what a
server coming up or a network settling can fix. A file the driver cannot read, a refused
password or a missing database fail the same way a minute later, so retrying them for
``MIGRATE_CONNECT_TIMEOUT`` only hides the cause (and keeps an app deaf to SIGTERM).
"""

from __future__ import annotations

import errno
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY = 0.05
GROWTH = 1.5
POLL_CAP = 0.5
CONNECT_CAP = 2.0


def poll(
    attempt: Callable[[], T | None],
    timeout: float,
    on_timeout: Callable[[], BaseException],
    *,
    cap: float = POLL_CAP,
    first: float = FIRST_DELAY,
) -> T:
    """Call ``attempt`` until it returns something other than None; ``on_timeout()`` is raised
    once ``timeout`` seconds have passed (the last attempt lands on the deadline). ``first``:
    a shorter first delay where the wait is usually a few milliseconds (a session exiting)."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        found = attempt()
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise on_timeout()
        time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
        delay = min(delay * GROWTH, cap)


# What a socket reports while the server is down, restarting or not yet reachable.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EPIPE,
        errno.EAGAIN,
    }
)


def heals_by_waiting(error: BaseException) -> bool | None:
    """For an OS-level error from a connection attempt: True if waiting may fix it (refused,
    reset, timed out, a host name not resolvable yet), False if not (a local file: missing,
    unreadable, not a file; TLS material that does not load); None for an error that is not
    an ``OSError``, which the backend judges by its driver's message."""
    if isinstance(error, ssl.SSLError):
        return False  # certificates, keys, a handshake refused: waiting changes none of them
    if isinstance(error, socket.gaierror):
        return True  # DNS: a service name that a cluster publishes a moment later
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    if isinstance(error, OSError):
        return error.errno in TRANSIENT_ERRNOS or error.errno is None
    return None
