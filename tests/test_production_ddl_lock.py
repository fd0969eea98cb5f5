"""MIGRATE_DDL_LOCK_TIMEOUT: a revision stuck behind another transaction's lock fails, named,
instead of queueing every query on that table behind its ALTER."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import MigrateSettings, MigrationFailed, migrate

from .support import add_revision, current_revisions, execute, to_async, write_migrations

ALTER = "op.add_column('t1', sa.Column('extra', sa.Integer))"


@contextmanager
def reader_in_a_long_transaction(url: str) -> Iterator[None]:
    """An open transaction that has read t1, so it holds a lock ALTER TABLE must wait for."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            # Safety net: if the timeout did not work, the holder goes away and the test fails
            # on the assertion rather than hanging.
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET idle_in_transaction_session_timeout = '30s'")
            else:
                conn.exec_driver_sql("SET SESSION idle_transaction_timeout = 30")
            conn.commit()
            conn.exec_driver_sql("SELECT * FROM t1").fetchall()
            yield
            conn.rollback()
    finally:
        engine.dispose()


def columns(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns("t1")}
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("backend", "env", "driver"),
    [
        ("postgresql", "fastapi", "sync"),
        ("postgresql", "fastapi", "async"),
        ("postgresql", "generic", "sync"),
        ("postgresql", "async", "async"),
        ("mariadb", "fastapi", "sync"),
    ],
    indirect=["backend"],
)
def test_revision_waiting_for_a_lock_fails_named_then_applies_later(
    project: Path, database_url: str, env: str, driver: str
) -> None:
    location = write_migrations(project, 1, env=env)
    url = to_async(database_url) if driver == "async" else database_url
    migrate(MigrateSettings(database_url=url))
    add_revision(location, "r2", "r1", upgrade=ALTER)
    settings = MigrateSettings(database_url=url, ddl_lock_timeout=0.5, ddl_lock_retries=0)

    with reader_in_a_long_transaction(database_url), pytest.raises(MigrationFailed) as failed:
        migrate(settings)
    assert failed.value.revision == "r2"
    assert failed.value.current_revision == "r1"
    assert "MIGRATE_DDL_LOCK_TIMEOUT" in str(failed.value)
    assert "extra" not in columns(database_url)

    result = migrate(settings)  # the long transaction ended: the next start applies it
    assert result.applied == ["r2"]
    assert "extra" in columns(database_url)
    assert current_revisions(database_url) == {"r2"}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_lock_timeout_applies_to_the_migration_only(project: Path, database_url: str) -> None:
    location = write_migrations(project, 0)
    record = "op.execute(\"CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS v\")"
    add_revision(location, "r1", None, upgrade=record)
    migrate(MigrateSettings(database_url=database_url, ddl_lock_timeout=2.5))
    assert execute(database_url, "SELECT v FROM seen") == [[("2500ms",)]]
    # The app's own sessions keep the server's setting.
    assert execute(database_url, "SHOW lock_timeout") == [[("0",)]]

    add_revision(location, "r2", "r1", upgrade="op.execute('DROP TABLE seen')\n" + record)
    migrate(MigrateSettings(database_url=database_url, ddl_lock_timeout=0))  # 0: not set
    assert execute(database_url, "SELECT v FROM seen") == [[("0",)]]
