"""The lease in a table (``MIGRATE_LOCK=lease``, and ``true`` where a session lock cannot be
trusted): its row and fence on real servers, a holder that lost it committing nothing, a killed
holder taken over after expiry, the table made once by many at the same moment and never taken
for an app table, ``CREATE INDEX CONCURRENTLY`` under it, and a server whose advisory locks
lock nothing (CockroachDB, simulated on PostgreSQL with stub functions ahead of ``pg_catalog``).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import ConfigurationError, LockLost, MigrateSettings, migrate
from fastapi_migrate.backends import backend_for
from fastapi_migrate.backends.base import Failure
from fastapi_migrate.backends.database import Database
from fastapi_migrate.backends.lease import LEASE_SECONDS, LEASE_TABLE, LeaseLock
from fastapi_migrate.glue.schema_diff import schema_differences

from .reliability_helpers import (
    connections_to,
    project_env,
    rows,
    spawn_cli,
    wait_for,
    wait_paused,
    write_project,
    write_revision,
)
from .support import add_revision, current_revisions, execute, table_names, write_migrations

SERVERS = pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
POSTGRESQL = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
def lease_of() -> Iterator[Callable[[str], LeaseLock]]:
    """Leases on a URL's alembic_version, each on an autocommit session of its own, closed
    after the test."""
    with ExitStack() as stack:

        def make(url: str) -> LeaseLock:
            db = Database(url)
            stack.callback(db.dispose)
            session = stack.enter_context(db.connection(autocommit=True))
            clock = db.backend.clock_sql
            assert clock is not None
            return LeaseLock(session, clock, schema=None, version_table="alembic_version")

        yield make


def lease_rows(url: str) -> list[tuple[object, ...]]:
    return rows(url, f"SELECT lock_key, owner, fence FROM {LEASE_TABLE}")


@SERVERS
def test_the_fence_grows_on_every_take_over_and_the_old_holder_cannot_commit(
    database_url: str, lease_of: Callable[[str], LeaseLock]
) -> None:
    first, second = lease_of(database_url), lease_of(database_url)
    assert first.try_acquire()
    assert first.fence == 1
    assert not second.try_acquire()  # held and not expired
    assert first.still_held()  # renewed
    assert "fence 1" in second.holder() and first.owner in second.holder()

    # The first holder stops renewing (paused, cut off) and its lease runs out.
    execute(database_url, f"UPDATE {LEASE_TABLE} SET expires_at = 0")
    assert second.try_acquire()
    assert second.fence == 2
    assert not first.still_held()
    assert "taken over" in first.not_held()

    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        lost = first.check_in(conn)
        conn.rollback()
        assert lost is not None and second.owner in lost and "fence 2" in lost
        assert second.check_in(conn) is None
        conn.rollback()
    engine.dispose()

    first.release()  # not its lease any more: changes nothing
    assert lease_rows(database_url) == [(".alembic_version", second.owner, 2)]
    second.release()
    assert lease_rows(database_url) == [(".alembic_version", None, 2)]
    assert first.try_acquire() and first.fence == 3


@SERVERS
def test_the_lease_table_is_made_once_by_many_processes_at_the_same_moment(
    database_url: str, lease_of: Callable[[str], LeaseLock]
) -> None:
    leases = [lease_of(database_url) for _ in range(8)]
    barrier = threading.Barrier(len(leases))
    errors: list[BaseException] = []

    def take(lease: LeaseLock) -> None:
        barrier.wait()
        try:
            lease.try_acquire()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [lease.fence is not None for lease in leases].count(True) == 1
    assert [(k, f) for k, _, f in lease_rows(database_url)] == [(".alembic_version", 1)]


LEASE_THIEF = """\
import os
import threading


def steal():  # another process's take-over, from a thread the migration does not guard
    engine = sa.create_engine(os.environ["FM_THIEF_URL"], poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE fastapi_migrate_lock SET owner = 'thief', fence = fence + 1"
        )
    engine.dispose()


thief = threading.Thread(target=steal)
thief.start()
thief.join()
op.create_table("k1", sa.Column("id", sa.Integer, primary_key=True))
"""


@SERVERS
def test_a_holder_whose_lease_was_taken_over_commits_nothing_more(
    project: Path, database_url: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside revision r1 another process takes the lease over: r1 (PostgreSQL: rolled back)
    or r2 (MariaDB, whose DDL commits by itself: r1 is in, its version row with it) never
    commits, and the start raises LockLost saying what happened."""
    location = write_migrations(project, 0)
    add_revision(location, "r1", None, upgrade=LEASE_THIEF)
    add_revision(location, "r2", "r1", table="k2")
    monkeypatch.setenv("FM_THIEF_URL", database_url)
    with pytest.raises(LockLost) as lost:
        migrate(MigrateSettings(database_url=database_url, lock="lease"))
    assert "taken over by thief" in str(lost.value)
    if backend == "postgresql":
        assert "rolled back; the database is left at no revision" in str(lost.value)
        assert current_revisions(database_url) == set()
        assert "k1" not in table_names(database_url)
    else:
        assert "it stopped before the next revision; the database is left at r1" in str(
            lost.value
        ), str(lost.value)
        assert current_revisions(database_url) == {"r1"}
    assert "k2" not in table_names(database_url)


@SERVERS
def test_kill_9_of_the_holder_the_next_start_takes_over_after_expiry(
    project: Path, database_url: str, backend: str
) -> None:
    """The bound: a lease never reaches further than ``LEASE_SECONDS`` ahead of the server's
    clock, so a killed holder's lease ends at most that long after it died; a start waiting
    up to three times as long (MIGRATE_LOCK_TIMEOUT) takes it over and migrates."""
    location = write_project(project)
    write_revision(location, "r1", None, 'op.create_table("t1", sa.Column("id", sa.Integer))')
    folder = project / "pause"
    folder.mkdir()
    env = {"MIGRATE_LOCK": "lease", "MIGRATE_LOCK_TIMEOUT": str(3 * LEASE_SECONDS)}
    paused = project_env(
        database_url, FM_TEST_PAUSE_AT="before_ddl", FM_TEST_PAUSE_DIR=str(folder), **env
    )
    holder = spawn_cli("holder", project, paused, project / "logs")
    wait_paused(folder, holder)
    clock = backend_for(backend).clock_sql
    ahead = rows(database_url, f"SELECT expires_at - {clock} FROM {LEASE_TABLE}")[0][0]
    assert 0 < float(ahead) <= LEASE_SECONDS  # type: ignore[arg-type]
    holder.kill9()
    killed = time.monotonic()

    again = spawn_cli("again", project, project_env(database_url, **env), project / "logs")
    assert again.popen.wait(120) == 0, again.output()
    took = time.monotonic() - killed
    assert current_revisions(database_url) == {"r1"}
    assert [f for _, _, f in lease_rows(database_url)] == [2]  # taken over once
    print(f"lease taken over {took:.1f}s after kill -9 (LEASE_SECONDS={LEASE_SECONDS:g})")


CONCURRENT_INDEX = """\
op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
op.execute("INSERT INTO items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 500) g")
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY ix_items_name ON items (name)")
"""


@POSTGRESQL
def test_create_index_concurrently_under_the_lease_beside_a_waiter(
    project: Path, database_url: str
) -> None:
    """No transaction stays open for the lease (its own or a waiter's), so CREATE INDEX
    CONCURRENTLY, which waits for every transaction older than itself, completes."""
    location = write_project(project)
    write_revision(location, "r1", None, CONCURRENT_INDEX)
    folder = project / "pause"
    folder.mkdir()
    paused = project_env(
        database_url,
        FM_TEST_PAUSE_AT="before_ddl",
        FM_TEST_PAUSE_DIR=str(folder),
        MIGRATE_LOCK="lease",
    )
    holder = spawn_cli("holder", project, paused, project / "logs")
    wait_paused(folder, holder)
    before = connections_to(database_url)
    waiter = spawn_cli(
        "waiter", project, project_env(database_url, MIGRATE_LOCK="lease"), project / "logs"
    )
    wait_for(lambda: connections_to(database_url) > before, 60, "the waiter", [waiter])
    (folder / "resume").touch()
    assert holder.popen.wait(120) == 0, holder.output()
    assert waiter.popen.wait(120) == 0, waiter.output()
    assert "migration noop" in waiter.output()
    valid = rows(
        database_url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'ix_items_name'",
    )
    assert valid == [(True,)]
    # The lease, not a session lock: one row, its fence at 1 or, where the waiter took the lease
    # after the holder let it go (to read the version table under it), 2.
    assert [f for _, _, f in lease_rows(database_url)] in ([1], [2])


COCKROACH_STUBS = """\
CREATE SCHEMA crdb_stub;
CREATE FUNCTION crdb_stub.pg_try_advisory_lock(bigint) RETURNS boolean LANGUAGE sql
    AS 'SELECT true';
CREATE FUNCTION crdb_stub.pg_advisory_lock(bigint) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION crdb_stub.pg_advisory_unlock(bigint) RETURNS boolean LANGUAGE sql
    AS 'SELECT true';
CREATE FUNCTION crdb_stub.pg_advisory_unlock_all() RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION crdb_stub.version() RETURNS text LANGUAGE sql
    AS $$SELECT 'CockroachDB CCL v23.2.4 (x86_64-pc-linux-gnu, built 2024/04/01, go1.21.9)'$$;
"""


@POSTGRESQL
def test_a_server_whose_advisory_locks_always_answer_true_gets_the_lease(
    project: Path, database_url: str
) -> None:
    """CockroachDB, simulated: every session of this database finds stub advisory functions
    and a CockroachDB ``version()`` ahead of ``pg_catalog``. Eight processes at once, the
    default MIGRATE_LOCK=true: each revision applied exactly once, every process exits 0."""
    name = sa.make_url(database_url).database
    execute(database_url, *COCKROACH_STUBS.split(";\n")[:-1])
    execute(database_url, f"ALTER DATABASE {name} SET search_path = public, crdb_stub, pg_catalog")
    assert rows(database_url, "SELECT pg_try_advisory_lock(1), pg_try_advisory_lock(1)") == [
        (True, True)
    ]
    location = write_project(project)
    write_revision(
        location,
        "r1",
        None,
        'op.create_table("revlog", sa.Column("revision", sa.String(10)))\n'
        "op.execute(\"INSERT INTO revlog VALUES ('r1')\")\ntime.sleep(0.3)\n",
    )
    write_revision(location, "r2", "r1", "op.execute(\"INSERT INTO revlog VALUES ('r2')\")\n")
    env = project_env(database_url, MIGRATE_LOCK_TIMEOUT="120")
    procs = [spawn_cli(f"cli-{i}", project, env, project / "logs") for i in range(8)]
    codes = [p.popen.wait(180) for p in procs]
    outputs = "\n".join(p.output() for p in procs)
    assert codes == [0] * 8, outputs
    assert rows(database_url, "SELECT revision, count(*) FROM revlog GROUP BY 1 ORDER BY 1") == [
        ("r1", 1),
        ("r2", 1),
    ]
    assert outputs.count("migration upgraded") == 1, outputs
    assert lease_rows(database_url)[0][2] >= 1  # type: ignore[operator]  # the lease was taken
    assert current_revisions(database_url) == {"r2"}


@SERVERS
def test_a_no_op_start_takes_no_lock_and_the_lease_table_is_not_the_apps(
    project: Path, database_url: str
) -> None:
    write_migrations(project, 2)
    settings = MigrateSettings(database_url=database_url, lock="lease")
    assert migrate(settings).action == "upgraded"  # the lease table did not make it "unversioned"
    assert LEASE_TABLE in table_names(database_url)

    metadata = sa.MetaData()
    for table in ("t1", "t2"):
        sa.Table(
            table,
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50)),
        )
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert schema_differences(conn, metadata) == []
    engine.dispose()

    execute(database_url, f"DROP TABLE {LEASE_TABLE}")
    assert migrate(settings).action == "noop"
    assert LEASE_TABLE not in table_names(database_url)  # no lock was taken


@POSTGRESQL
def test_the_librarys_psycopg_connections_never_prepare_statements(database_url: str) -> None:
    """Through a pooler in transaction mode a prepared statement's name exists on one server
    session only: psycopg 3 prepares a query run five times unless told not to."""
    db = Database(database_url)
    try:
        dbapi = db.run(lambda c: c.connection.dbapi_connection)
        threshold = dbapi.prepare_threshold  # type: ignore[union-attr]
    finally:
        db.dispose()
    assert threshold is None


def test_cockroachdb_is_known_by_name_with_the_lease_and_its_ddl_hint() -> None:
    """sqlalchemy-cockroachdb's ``cockroachdb://``: the lease, always, and a failed revision's
    hint says that its schema changes were not rolled back."""
    cockroach = backend_for("cockroachdb")
    assert cockroach.transactional_ddl is False
    assert cockroach.clock_sql is not None
    url = sa.make_url("cockroachdb://root@127.0.0.1:26257/app")
    assert "lock nothing" in str(cockroach.session_lock_doubt(None, url, "DATABASE_URL"))
    failure = Failure(RuntimeError("x"), "revision r2", "r2", "r1", "r1", autocommit_block=False)
    hint = cockroach.failure_hint(failure, None)  # type: ignore[arg-type]
    assert "CockroachDB runs schema changes outside" in hint
    if importlib.util.find_spec("sqlalchemy_cockroachdb") is not None:
        return  # the dialect is installed: no server to start it against here
    with pytest.raises(ConfigurationError, match="pip install sqlalchemy-cockroachdb"):
        migrate(MigrateSettings(database_url="cockroachdb://root@127.0.0.1:26257/app"))


def test_a_bad_migrate_lock_is_one_clear_error() -> None:
    """MIGRATE_LOCK is a union (true/false or "lease"): pydantic fails it once per member,
    which used to print MIGRATE_LOCK twice with two half-truths."""
    with pytest.raises(ConfigurationError) as bad:
        MigrateSettings(database_url="sqlite://", lock="maybe")  # type: ignore[arg-type]
    message = str(bad.value)
    assert message.count("MIGRATE_LOCK") == 1, message
    assert "expected true" in message and "lease or false (got 'maybe')" in message
