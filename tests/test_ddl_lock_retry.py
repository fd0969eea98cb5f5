"""MIGRATE_DDL_LOCK_RETRIES: a revision stuck behind another session's table lock gives way and
is tried again, each timed-out attempt naming who blocked it; once the retries are spent the
failure says which revision, where the database was left and who blocked the last attempt.

The blocker is a real session in a real transaction on the table; it is released when the
migration's output shows the first timed-out attempt (no timing assumption).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import MigrateSettings, MigrationFailed, migrate

from .production_helpers import write_app
from .progress_helpers import Output
from .support import (
    add_revision,
    current_revisions,
    start_uvicorn,
    stop,
    subprocess_env,
    table_names,
    write_migrations,
)

ALTERS = {
    "operation": "op.add_column('t1', sa.Column('extra', sa.Integer))",
    "raw": "op.execute('ALTER TABLE t1 ADD COLUMN extra INTEGER')",
    "autocommit": (
        "with op.get_context().autocommit_block():\n"
        "    op.execute('ALTER TABLE t1 ADD COLUMN extra INTEGER')"
    ),
}
BEFORE = "op.create_table('before_alter', sa.Column('id', sa.Integer, primary_key=True))\n"


class Holder:
    """A session with a transaction open that has read t1: ALTER TABLE t1 waits for it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pid = 0
        self._ready = threading.Event()
        self._release = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                # Safety net: should the migration hang, the holder goes away after a minute.
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET idle_in_transaction_session_timeout = '60s'")
                    self.pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                else:
                    conn.exec_driver_sql("SET SESSION idle_transaction_timeout = 60")
                    self.pid = int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
                conn.commit()
                conn.exec_driver_sql("SELECT * FROM t1").fetchall()
                self._ready.set()
                self._release.wait(90)
                conn.rollback()
        except BaseException as error:  # reported by the test, not lost in the thread
            self._failed = error
            self._ready.set()
        finally:
            engine.dispose()

    def release(self) -> None:
        self._release.set()

    @contextmanager
    def holding(self) -> Iterator[Holder]:
        self._thread.start()
        self._ready.wait(30)
        if self._failed is not None:
            raise self._failed
        try:
            yield self
        finally:
            self.release()
            self._thread.join(30)


def columns(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns("t1")}
    finally:
        engine.dispose()


def project_at_r1(project: Path, url: str, alter: str) -> None:
    """r1 applied (t1 exists); r2 creates a table, then alters t1 (which the holder reads)."""
    location = write_migrations(project, 1)
    migrate(MigrateSettings(database_url=url))
    add_revision(location, "r2", "r1", upgrade=BEFORE + alter)


@pytest.mark.parametrize(
    ("backend", "alter"),
    [
        ("postgresql", "operation"),
        ("postgresql", "raw"),
        ("postgresql", "autocommit"),
        ("mariadb", "operation"),
        ("mariadb", "raw"),
    ],
    indirect=["backend"],
)
def test_cli_upgrade_blocked_by_a_lock_succeeds_on_a_later_attempt(
    project: Path, database_url: str, backend: str, alter: str
) -> None:
    project_at_r1(project, database_url, ALTERS[alter])
    env = subprocess_env(
        DATABASE_URL=database_url, MIGRATE_DDL_LOCK_TIMEOUT="1", MIGRATE_DDL_LOCK_RETRIES="5"
    )
    with Holder(database_url).holding() as holder:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastapi_migrate", "upgrade"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with Output(proc) as out:
            warning = out.wait_for("attempt 1 of 6")
            holder.release()  # the transaction ends: a later attempt gets the lock
            assert out.finish() == 0, out.text()
    assert f"blocked by pid {holder.pid} (application " in warning, warning
    assert "transaction open" in warning and "SELECT" not in warning, warning
    assert "waited more than 1s for a table lock (MIGRATE_DDL_LOCK_TIMEOUT)" in warning
    assert "still holding the migration lock" in warning
    if backend == "postgresql" and alter != "autocommit":
        assert "rolled back, nothing of it committed" in warning, warning
    else:  # the statement alone is tried again; the table made before it stays (made once)
        assert "that statement is tried again" in warning, warning
        assert "the statements before it" in warning and "stay applied" in warning, warning
    assert out.lines()[-1].startswith("migration upgraded: from r1 to r2, applied 1 [r2]")
    assert "extra" in columns(database_url)
    assert "before_alter" in table_names(database_url)
    assert current_revisions(database_url) == {"r2"}


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_spent_retries_fail_naming_revision_database_state_and_blocker(
    project: Path, database_url: str, backend: str
) -> None:
    project_at_r1(project, database_url, ALTERS["operation"])
    settings = MigrateSettings(database_url=database_url, ddl_lock_timeout=1, ddl_lock_retries=1)
    with Holder(database_url).holding() as holder, pytest.raises(MigrationFailed) as failed:
        migrate(settings)
    message = str(failed.value)
    assert failed.value.revision == "r2" and failed.value.current_revision == "r1"
    assert "revision r2 failed" in message and "the database is left at r1" in message
    assert "on 2 attempts (MIGRATE_DDL_LOCK_RETRIES=1)" in message, message
    assert f"last attempt blocked by pid {holder.pid} (" in message, message
    assert "extra" not in columns(database_url)
    assert current_revisions(database_url) == {"r1"}
    if backend == "postgresql":  # nothing of the revision was committed
        assert "before_alter" not in table_names(database_url)


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_lifespan_with_no_retries_fails_at_once_naming_the_blocker(
    project: Path, database_url: str, backend: str
) -> None:
    project_at_r1(project, database_url, ALTERS["operation"])
    write_app(project)
    env = subprocess_env(
        DATABASE_URL=database_url, MIGRATE_DDL_LOCK_TIMEOUT="1", MIGRATE_DDL_LOCK_RETRIES="0"
    )
    with Holder(database_url).holding() as holder:
        proc, _port = start_uvicorn("app:app", project, env)
        try:
            proc.wait(60)  # the startup fails: uvicorn exits
        finally:
            output = stop(proc)
    assert proc.returncode != 0, output
    assert "revision r2 failed" in output and "the database is left at r1" in output, output
    assert "its only attempt (MIGRATE_DDL_LOCK_RETRIES=0)" in output, output
    assert f"blocked by pid {holder.pid} (" in output, output
    assert "attempt 1 of" not in output  # no retry was logged
    assert "extra" not in columns(database_url)
    assert current_revisions(database_url) == {"r1"}
    if backend == "postgresql":
        assert "before_alter" not in table_names(database_url)
