"""``poll``: the one retry loop (connecting, taking the lock, waiting for another's migration).

Jittered exponential backoff, so that replicas started together spread out. The constants:

- ``FIRST_DELAY`` 50 ms: the common wait (another process finishing a short migration) ends
  within a few attempts;
- ``GROWTH`` 1.5 per attempt, up to a cap that depends on what an attempt costs:
- ``POLL_CAP`` 0.5 s where an attempt is a query on a connection already open (the lock, the
  version table): a waiter notices the end of another's migration within half a second;
- ``CONNECT_CAP`` 2 s where an attempt opens a connection to a server that may be down or
  restarting: dozens of replicas must not hammer it.
"""

from __future__ import annotations

import random
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
