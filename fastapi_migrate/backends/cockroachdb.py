"""CockroachDB (``cockroachdb://``, sqlalchemy-cockroachdb): PostgreSQL's wire and SQL, with
advisory lock functions that answer TRUE and lock nothing, and schema changes that are not
transactional. So: always the lease, never a session lock, and a hint for half-done DDL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from .base import Backend, DatabaseServer, Failure, Session
from .postgresql import PostgreSQL


class CockroachDB(PostgreSQL):
    transactional_ddl = False  # each schema change commits by itself (as the dialect says)

    def session_lock_doubt(self, session: Session | None, url: URL, variable: str) -> str | None:
        return "CockroachDB's advisory locks lock nothing"

    def failure_hint(self, failure: Failure, session: Session) -> str:
        if failure.revision is None and not failure.what.startswith("MIGRATE_EMPTY_DATABASE"):
            return ""
        return (
            f"; CockroachDB runs schema changes outside the migration's transaction, so "
            f"{failure.what} may be half-applied: undo or finish its statements by hand, then "
            "start again"
        )

    def test_server(self, url: URL, directory: Path) -> DatabaseServer:
        return Backend.test_server(self, url, directory)  # no CREATE DATABASE ... TEMPLATE
