"""TCP keepalives on fastapi-migrate's own connections, whatever the driver: a quiet lock or
migration connection is not dropped by a load balancer or NAT, and a dead peer is noticed in
about a minute, not two hours."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from fastapi_migrate.backends.base import KEEPALIVE_IDLE, socket_of
from fastapi_migrate.backends.database import Database

from .conftest import require_backend
from .support import MARIADB_SERVER, PG_SERVER, to_async


def _sync_socket(dbapi_connection: Any) -> socket.socket | None:
    pgconn = getattr(dbapi_connection, "pgconn", None)  # psycopg: libpq's socket
    if pgconn is not None:
        return socket.socket(fileno=socket.dup(pgconn.socket))
    return socket_of(dbapi_connection)


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ("postgresql", PG_SERVER),
        ("postgresql", to_async(PG_SERVER)),
        ("mariadb", MARIADB_SERVER),
        ("mariadb", to_async(MARIADB_SERVER)),
    ],
    ids=["psycopg", "asyncpg", "pymysql", "aiomysql"],
)
def test_connections_have_tcp_keepalives(backend: str, url: str) -> None:
    require_backend(backend)
    db = Database(url)
    try:
        found: list[tuple[int, int]] = []

        def probe(connection: Any) -> None:
            raw = connection.connection.dbapi_connection
            sock = _sync_socket(raw)
            assert sock is not None, f"no socket found under {type(raw).__name__}"
            found.append(
                (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                )
            )
            if getattr(raw, "pgconn", None) is not None:
                sock.close()  # our duplicate of libpq's descriptor, not the driver's socket

        db.run(probe)
        assert found == [(1, KEEPALIVE_IDLE)]
    finally:
        db.dispose()
