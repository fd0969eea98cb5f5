"""The migration lock at its edges: the traps of FIELD_NOTES, each shown on a real server."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import ConfigurationError, MigrateSettings, migrate, migrate_on_startup
from fastapi_migrate.backends.mysql import lock_name
from fastapi_migrate.backends.postgresql import advisory_key, try_advisory_lock, verify_owner

from .conftest import skip_unless_ci
from .progress_helpers import without_progress
from .reliability_helpers import (
    Proc,
    connections_to,
    project_env,
    record,
    rows,
    spawn_cli,
    wait_for,
    wait_paused,
    write_project,
    write_revision,
)
from .support import (
    MARIADB_SERVER,
    PG_SERVER,
    add_revision,
    current_revisions,
    execute,
    popen,
    unique_name,
    write_migrations,
)

POSTGRESQL = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
MARIADB = pytest.mark.parametrize("backend", ["mariadb"], indirect=True)

ITEMS = """\
op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
op.execute("INSERT INTO items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 500) g")
"""
CONCURRENT_INDEX = """\
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY ix_items_name ON items (name)")
"""


def holder_and_waiters(
    project: Path, url: str, waiters: int, **env: str
) -> tuple[Proc, list[Proc], Path]:
    """One CLI paused holding the lock (before its DDL) and ``waiters`` CLIs polling for it."""
    folder = project / "pause"
    folder.mkdir()
    paused = project_env(url, FM_TEST_PAUSE_AT="before_ddl", FM_TEST_PAUSE_DIR=str(folder), **env)
    holder = spawn_cli("holder", project, paused, project / "logs")
    wait_paused(folder, holder)
    before = connections_to(url)
    others = [
        spawn_cli(f"waiter-{i}", project, project_env(url, **env), project / "logs")
        for i in range(waiters)
    ]
    wait_for(lambda: connections_to(url) >= before + waiters, 60, "the waiters", others)
    return holder, others, folder


def all_succeed(procs: list[Proc], timeout: float = 90) -> None:
    for proc in procs:
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill9()
            raise AssertionError(f"{proc.name} still running after {timeout}s") from None
        assert proc.popen.returncode == 0, f"{proc.name}: {proc.output()}"


@POSTGRESQL
def test_a_blocked_pg_advisory_lock_waiter_deadlocks_with_create_index_concurrently(
    project: Path, database_url: str
) -> None:
    """The trap, shown: a waiter blocked in ``pg_advisory_lock`` holds a snapshot that
    ``CREATE INDEX CONCURRENTLY`` must wait for, while it waits for the lock: PostgreSQL kills
    one of them. (The test below is the same migration with fastapi-migrate's waiters.)"""
    execute(database_url, "CREATE TABLE items (id int, name text)")
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    errors: list[str] = []
    try:
        with engine.connect() as migrator:
            migrator.exec_driver_sql("SELECT pg_advisory_lock(42)")

            def blocked_waiter() -> None:
                with engine.connect() as waiter:
                    try:
                        waiter.exec_driver_sql("SELECT pg_advisory_lock(42)")
                    except sa.exc.DBAPIError as error:
                        errors.append(str(error.orig))

            thread = threading.Thread(target=blocked_waiter)
            thread.start()
            wait_for(lambda: connections_to(database_url) >= 2, 10, "the blocked waiter")
            time.sleep(0.2)
            migrator.exec_driver_sql("SET lock_timeout = '20s'")
            migrator.exec_driver_sql("CREATE INDEX CONCURRENTLY ix ON items (name)")
            migrator.exec_driver_sql("SELECT pg_advisory_unlock(42)")
            thread.join(30)
    finally:
        engine.dispose()
    assert errors and "deadlock detected" in errors[0], errors


@POSTGRESQL
def test_create_index_concurrently_while_others_wait_for_the_lock(
    project: Path, database_url: str
) -> None:
    location = write_project(project)
    write_revision(location, "r1", None, ITEMS)
    write_revision(location, "r2", "r1", CONCURRENT_INDEX)
    holder, waiters, folder = holder_and_waiters(project, database_url, 3)
    (folder / "resume").touch()  # the index is built while three processes poll for the lock
    all_succeed([holder, *waiters])
    assert "migration upgraded: from base to r2, applied 2 [r1,r2]" in holder.output()
    for waiter in waiters:
        assert "migration noop: from r2 to r2" in waiter.output(), waiter.output()
    valid = rows(
        database_url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'ix_items_name'",
    )
    assert valid == [(True,)]


@pytest.fixture
def timid_role(database_url: str) -> Iterator[str]:
    """A role whose server settings kill any statement waiting 100 ms for a lock, or running
    500 ms: the URL of the test database as that role."""
    name = unique_name("fm_timid")
    database = sa.make_url(database_url).database
    execute(
        PG_SERVER,
        f"CREATE ROLE {name} LOGIN",
        f"ALTER ROLE {name} SET lock_timeout = '100ms'",
        f"ALTER ROLE {name} SET statement_timeout = '500ms'",
        f"GRANT ALL ON DATABASE {database} TO {name}",
    )
    execute(database_url, f"GRANT ALL ON SCHEMA public TO {name}")
    try:
        yield sa.make_url(database_url).set(username=name).render_as_string(hide_password=False)
    finally:
        execute(database_url, f"REASSIGN OWNED BY {name} TO postgres", f"DROP OWNED BY {name}")
        execute(PG_SERVER, f"REVOKE ALL ON DATABASE {database} FROM {name}", f"DROP ROLE {name}")


@POSTGRESQL
def test_a_role_lock_timeout_does_not_kill_the_waiters(project: Path, timid_role: str) -> None:
    location = write_project(project)
    write_revision(location, "r1", None, ITEMS)
    assert rows(timid_role, "SHOW lock_timeout") == [("100ms",)]
    holder, waiters, folder = holder_and_waiters(project, timid_role, 3)
    time.sleep(1.5)  # three times the role's statement_timeout, fifteen its lock_timeout
    (folder / "resume").touch()
    all_succeed([holder, *waiters])
    assert current_revisions(timid_role) == {"r1"}


@POSTGRESQL
def test_lock_ownership_check_notices_another_session(database_url: str) -> None:
    """What a pooler in transaction mode does, done by hand: the statement after the lock
    runs on another server session. The check refuses it."""
    key = advisory_key(None, "alembic_version")
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as first, engine.connect() as second:
            hold = try_advisory_lock(first, key, "DATABASE_URL")
            assert hold is not None
            verify_owner(first, hold, "DATABASE_URL")  # the same session: fine
            with pytest.raises(ConfigurationError) as refused:
                verify_owner(second, hold, "DATABASE_URL")
            message = str(refused.value)
            assert f"session {hold.pid} took it, the next statement ran on" in message
            assert "DATABASE_URL seems to go through a connection pooler" in message
    finally:
        engine.dispose()


@pytest.fixture
def pgbouncer(database_url: str) -> Iterator[str]:
    """A real PgBouncer in transaction mode with a single server connection in front of the
    test database; its URL."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        skip_unless_ci("pgbouncer is not installed (apt-get install pgbouncer)")
    # It listens on a unix socket in a folder of its own (no TCP port to race for): the file
    # name's number is only PgBouncer's naming scheme, unique because the folder is.
    folder = Path(tempfile.mkdtemp(prefix="fm-pgbouncer-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:  # pgbouncer drops root for the postgres user, who makes the socket
        postgres = pwd.getpwnam("postgres")
        os.chown(folder, postgres.pw_uid, postgres.pw_gid)
    port = 6432
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n* = host=127.0.0.1 port=5432 user=postgres\n"
        f"[pgbouncer]\nlisten_addr =\nlisten_port = {port}\nunix_socket_dir = {folder}\n"
        "auth_type = any\npool_mode = transaction\ndefault_pool_size = 1\n"
        "max_client_conn = 50\nignore_startup_parameters = extra_float_digits,options\n"
    )
    ini.chmod(0o644)
    proc = popen(
        "pgbouncer",
        [binary, "-u", "postgres", str(ini)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = (
        sa.make_url(database_url)
        .set(host=None, port=None, query={"host": str(folder), "port": str(port)})
        .render_as_string(hide_password=False)
    )
    try:
        wait_for(lambda: proc.poll() is not None or _answers(url), 15, "pgbouncer")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        rows(url, "SELECT 1")
        return True
    except sa.exc.DBAPIError:
        return False


@POSTGRESQL
def test_behind_pgbouncer_in_transaction_mode_the_lease_is_chosen(
    project: Path, pgbouncer: str, database_url: str
) -> None:
    """Through a transaction pooler both clients' statements run on one server session, where
    a session lock is reentrant. With the default MIGRATE_LOCK=true the pooler is seen (the
    URL's port is not the server's) and the lease is taken instead: the second migrator waits
    for the first, then finds the database at head."""
    location = write_project(project)
    write_revision(location, "r1", None, ITEMS)
    folder = project / "pause"
    folder.mkdir()
    paused = project_env(pgbouncer, FM_TEST_PAUSE_AT="before_ddl", FM_TEST_PAUSE_DIR=str(folder))
    first = spawn_cli("first", project, paused, project / "logs")
    wait_paused(folder, first)
    (owner,) = rows(database_url, "SELECT owner FROM fastapi_migrate_lock")[0]
    assert owner is not None  # the first holds the lease

    second = spawn_cli("second", project, project_env(pgbouncer), project / "logs")
    time.sleep(2)  # let it poll; it must still be waiting (nothing to assert on time)
    assert second.popen.poll() is None, second.output()
    assert current_revisions(database_url) == set()

    (folder / "resume").touch()
    assert first.popen.wait(120) == 0, first.output()
    assert second.popen.wait(120) == 0, second.output()
    assert without_progress(first.output())[0].startswith("migration upgraded"), first.output()
    assert without_progress(second.output())[0].startswith("migration noop"), second.output()
    assert rows(database_url, "SELECT count(*) FROM items") == [(500,)]
    assert current_revisions(database_url) == {"r1"}
    record("lock behind PgBouncer (transaction mode): the lease, chosen", "postgresql", 1, 0, 0)


REVLOG = """\
op.create_table("revlog", sa.Column("revision", sa.String(10)), sa.Column("pid", sa.Integer))
"""


def _log_row(revision: str) -> str:
    return (
        f"op.execute(\"INSERT INTO revlog VALUES ('{revision}', \" + str(__import__('os')"
        '.getpid()) + ")")\ntime.sleep(0.2)\n'
    )


@POSTGRESQL
def test_a_stampede_through_pgbouncer_in_transaction_mode_migrates_once(
    project: Path, pgbouncer: str, database_url: str
) -> None:
    """Eight processes at once on a fresh database, each through the pooler, the default
    MIGRATE_LOCK=true: each revision applied exactly once, every process exits 0 (before the
    lease: ``LockLost``, or psycopg's ``prepared statement "_pg3_0" already exists``)."""
    location = write_project(project)
    write_revision(location, "r1", None, REVLOG + _log_row("r1"))
    for k in (2, 3):
        write_revision(location, f"r{k}", f"r{k - 1}", _log_row(f"r{k}"))
    env = project_env(pgbouncer, MIGRATE_LOCK_TIMEOUT="120")
    procs = [spawn_cli(f"cli-{i}", project, env, project / "logs") for i in range(8)]
    codes = [p.popen.wait(240) for p in procs]
    outputs = "\n".join(f"--- {p.name}: {p.output()}" for p in procs)
    assert codes == [0] * 8, outputs
    counts = rows(database_url, "SELECT revision, count(*) FROM revlog GROUP BY 1 ORDER BY 1")
    assert counts == [("r1", 1), ("r2", 1), ("r3", 1)], outputs
    assert outputs.count("migration upgraded") == 1, outputs
    assert current_revisions(database_url) == {"r3"}
    record("stampede of 8 through PgBouncer (transaction mode)", "postgresql", 1, 0, 0)


@MARIADB
def test_mariadb_lock_wait_timeout_is_bounded_for_the_migration(
    project: Path, database_url: str
) -> None:
    """MariaDB's ``lock_wait_timeout`` defaults to a year: a DDL behind a metadata lock would
    wait that long. The migration's own session gets MIGRATE_DDL_LOCK_TIMEOUT (10 s)."""
    location = write_migrations(project, 0)
    add_revision(
        location,
        "r1",
        None,
        upgrade='op.execute("CREATE TABLE seen AS SELECT @@session.lock_wait_timeout AS v")',
    )
    migrate(MigrateSettings(database_url=database_url))
    assert rows(database_url, "SELECT v FROM seen") == [(10,)]
    # The server's own setting (a year unless configured) stays for every other session.
    server = rows(database_url, "SELECT @@global.lock_wait_timeout, @@session.lock_wait_timeout")
    assert server[0][0] == server[0][1] > 10


def test_two_lifespans_in_one_process_do_not_race_in_alembic(tmp_path: Path) -> None:
    """Alembic keeps its context in module globals: two apps starting at once in one process
    (two threads) must not interleave in it. Two apps share one database, a third has its own;
    every revision sleeps so that they overlap."""
    (tmp_path / "project").mkdir()
    location = write_migrations(tmp_path / "project", 0)
    for k in range(1, 4):
        add_revision(
            location,
            f"r{k}",
            f"r{k - 1}" if k > 1 else None,
            upgrade=f"__import__('time').sleep(0.2)\nop.create_table('t{k}', sa.Column('id', "
            "sa.Integer, primary_key=True))",
        )
    shared = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    own = f"sqlite:///{tmp_path / 'own.sqlite'}"
    apps = [
        FastAPI(lifespan=migrate_on_startup(database_url=url, script_location=str(location)))
        for url in (shared, shared, own)
    ]
    errors: list[BaseException] = []
    start = threading.Barrier(len(apps))

    def serve(app: FastAPI) -> None:
        start.wait()
        try:
            with TestClient(app):
                pass
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=serve, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    actions = sorted(app.state.migration.action for app in apps)
    assert actions == ["noop", "upgraded", "upgraded"]
    assert current_revisions(shared) == current_revisions(own) == {"r3"}


def test_lock_key_and_name_are_pinned() -> None:
    """Two releases of fastapi-migrate must take the same lock, or a rolling deploy runs two
    migrators at once: these values may never change."""
    assert advisory_key(None, "alembic_version") == -560974606063187249
    assert advisory_key("public", "alembic_version") == 2471725136957206517
    assert lock_name("test", None, "alembic_version") == "fastapi_migrate:test..alembic_version"
    long = lock_name("d" * 64, "s" * 63, "t" * 63)
    assert long == "fastapi_migrate:e5bf9e139f85712ce92a:ttttttttttttttttttttttttttt"
    assert len(long) == 64
    assert lock_name("d" * 64, "s" * 63, "u" * 63) != long


@MARIADB
def test_the_longest_lock_name_is_accepted_by_mariadb(database_url: str) -> None:
    name = lock_name("d" * 64, "s" * 63, "t" * 63)
    engine = sa.create_engine(MARIADB_SERVER, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
            assert conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name}).scalar() == 1
    finally:
        engine.dispose()
