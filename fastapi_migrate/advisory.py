"""PostgreSQL's session advisory lock, taken only when this client really owns the session.

Behind a connection pooler in transaction mode (PgBouncer ``pool_mode = transaction``, some
cloud proxies) every statement may run on another server session: a session lock taken by one
statement stays on a server connection that the pooler then hands to other clients, and two
migrators can both "hold" it. So after ``pg_try_advisory_lock`` succeeds, the session is marked
with a token of ours (a custom setting) and checked: the backend must be the one that took the
lock, it must appear in ``pg_locks`` holding the key, and no other client's token may be on it.
Anything else is a ``ConfigurationError``: point the URL at the server, or at a session pool.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from .errors import ConfigurationError

log = logging.getLogger("fastapi_migrate")

OWNER_SETTING = "fastapi_migrate.lock_owner"

_TRY = text(
    "SELECT pg_try_advisory_lock(:k), pg_backend_pid(), current_setting(:s, true)"
).bindparams(s=OWNER_SETTING)
_MARK = text("SELECT set_config(:s, :t, false)").bindparams(s=OWNER_SETTING)
_CHECK = text(
    "SELECT pg_backend_pid(), current_setting(:s, true), EXISTS (SELECT 1 FROM pg_locks "
    "WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() "
    "AND classid = :hi AND objid = :lo AND objsubid = 1)"
).bindparams(s=OWNER_SETTING)
_UNLOCK = text("SELECT pg_advisory_unlock(:k), set_config(:s, '', false)").bindparams(
    s=OWNER_SETTING
)


@dataclass(frozen=True)
class AdvisoryHold:
    """The key, the server session (backend pid) that holds it, and our token on that session."""

    key: int
    pid: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


def _key_parts(key: int) -> dict[str, int]:
    """How ``pg_locks`` shows a bigint key: high and low 32 bits as ``classid`` / ``objid``."""
    return {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}


def _pooled(variable: str, detail: str) -> ConfigurationError:
    return ConfigurationError(
        f"the migration lock would not be safe: {detail}. {variable} seems to go through a "
        "connection pooler in transaction mode (PgBouncer pool_mode=transaction, a proxy), "
        "where a session advisory lock leaks to other clients; point it at the PostgreSQL "
        "server itself, or at a pool in session mode"
    )


def try_advisory_lock(conn: Connection, key: int, variable: str) -> AdvisoryHold | None:
    """Take the lock if free and verify we own it; ``None`` if another session holds it."""
    got, pid, previous = conn.execute(_TRY, {"k": key}).one()
    if not got:
        return None
    hold = AdvisoryHold(key, int(pid))
    if previous:
        # Reentrant success on a session that another client marked: the session is shared.
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        raise _pooled(
            variable,
            f"PostgreSQL session {pid} already holds it for another client ({previous})",
        )
    conn.execute(_MARK, {"t": hold.token})
    verify_owner(conn, hold, variable)
    return hold


def verify_owner(conn: Connection, hold: AdvisoryHold, variable: str) -> None:
    """Raise ``ConfigurationError`` unless this statement runs on the session holding the key."""
    pid, token, holds = conn.execute(_CHECK, _key_parts(hold.key)).one()
    if pid != hold.pid:
        detail = f"PostgreSQL session {hold.pid} took it, the next statement ran on {pid}"
    elif token != hold.token or not holds:
        detail = f"PostgreSQL session {pid} does not hold it for this client"
    else:
        return
    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": hold.key})  # best effort
    raise _pooled(variable, detail)


def release(conn: Connection, hold: AdvisoryHold) -> None:
    """Unlock; a lock that is already gone (its session ended) is only worth a warning."""
    released = conn.execute(_UNLOCK, {"k": hold.key}).scalar()
    if not released:
        log.warning(
            "the migration lock was no longer held by PostgreSQL session %s when released",
            hold.pid,
        )
