"""Statements a database refuses inside a transaction (issue 8.2): a revision with Alembic's
``op.get_context().autocommit_block()`` runs under racing processes, with the migration lock
held throughout, and a failure inside the block is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import MigrateSettings, MigrationFailed, migrate

from .conftest import require_backend
from .support import (
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    subprocess_env,
    table_names,
    to_async,
    write_migrations,
)

PROCESSES = 3

# Import everything, say READY, wait for the starting gun, migrate once.
CHILD = """\
import sys, time
from pathlib import Path
from fastapi_migrate import MigrateSettings, migrate

print("READY", flush=True)
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
result = migrate(MigrateSettings())
print("RESULT", result.action, ",".join(result.applied), flush=True)
"""


def race(project: Path, url: str, processes: int = PROCESSES) -> list[list[str]]:
    """Start ``processes`` migrators at once; each one's RESULT line (action, applied)."""
    go = project / "go"
    children = []
    for _ in range(processes):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go)],
            cwd=project,
            env=subprocess_env(DATABASE_URL=url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        children.append(child)
    go.touch()
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert [child.returncode for child in children] == [0] * processes, "\n---\n".join(outputs)
    results = [line.split()[1:] for out in outputs for line in out.splitlines() if "RESULT" in line]
    assert sorted(r[0] for r in results) == ["noop"] * (processes - 1) + ["upgraded"], outputs
    return results


# -- PostgreSQL: a new enum value and an index built concurrently, replicas waiting meanwhile ----

ENUM_TABLE = """\
op.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
op.execute("CREATE TABLE items (id serial PRIMARY KEY, name text, mood mood)")
op.execute(
    "INSERT INTO items (name, mood) SELECT 'item ' || g, 'happy' FROM generate_series(1, 20000) g"
)"""

# Inside the block it waits until every other process is polling for the migration lock, so the
# index is built while they wait; then records how many waited and whether the lock (a session
# lock) is still held after the block committed the transaction before it.
CONCURRENT_INDEX = """\
import time
from pathlib import Path
from fastapi_migrate.backends.postgresql import advisory_key

key = advisory_key(None, "alembic_version")
holder = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
    # Advisory locks are per database: other tests' databases hold the same key meanwhile.
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    f"AND classid = {{(key >> 32) & 0xFFFFFFFF}} AND objid = {{key & 0xFFFFFFFF}} AND objsubid = 1"
)
lock_held = sa.text(f"SELECT count(*) FROM ({{holder}}) h")
waiting = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND query LIKE 'SELECT pg_try_advisory_lock%' "
    f"AND pid NOT IN ({{holder}})"
)
with op.get_context().autocommit_block():
    bind = op.get_bind()
    deadline = time.monotonic() + 60
    while bind.execute(waiting).scalar() < {processes} - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    waiters = bind.execute(waiting).scalar()
    op.execute("ALTER TYPE mood ADD VALUE 'ok'")
    op.execute("CREATE INDEX CONCURRENTLY ix_items_name ON items (name)")
    held = bind.execute(lock_held).scalar()
Path({report!r}).write_text(f"{{waiters}} {{held}}")
# Only possible once ADD VALUE has committed: a new enum value is unusable in its transaction.
op.execute("UPDATE items SET mood = 'ok' WHERE id <= 10")"""


@pytest.mark.parametrize("env", ["fastapi", "generic", "async"])
def test_concurrent_index_and_enum_value_while_replicas_wait(
    project: Path, tmp_path: Path, env: str
) -> None:
    require_backend("postgresql")
    location = write_migrations(project, 0, env="fastapi" if env == "async" else env)
    report = project / "report"
    add_revision(location, "r1", None, upgrade=ENUM_TABLE)
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=CONCURRENT_INDEX.format(processes=PROCESSES, report=str(report)),
    )
    with fresh_database("postgresql", tmp_path) as url:
        results = race(project, to_async(url) if env == "async" else url)

        assert [r[1] for r in results if r[0] == "upgraded"] == ["r1,r2"]
        waiters, held = report.read_text().split()
        # Every other process was polling for the lock while the index was built.
        assert int(waiters) == PROCESSES - 1
        assert int(held) == 1
        (valid,), (moods,), (ok,) = execute(
            url,
            "SELECT i.indisvalid AND i.indisready FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'ix_items_name'",
            "SELECT enum_range(NULL::mood)::text",
            "SELECT count(*) FROM items WHERE mood = 'ok'",
        )
        assert valid == (True,)
        assert moods == ("{happy,sad,ok}",)
        assert ok == (10,)
        assert current_revisions(url) == {"r2"}


@pytest.mark.parametrize("env", ["fastapi", "generic"])
def test_failure_inside_the_block_names_the_revision_and_what_stays(
    project: Path, tmp_path: Path, env: str
) -> None:
    require_backend("postgresql")
    location = write_migrations(project, 0, env=env)
    add_revision(location, "r1", None, upgrade=ENUM_TABLE)
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=(
            "with op.get_context().autocommit_block():\n"
            "    op.execute(\"ALTER TYPE mood ADD VALUE 'ok'\")\n"
            "    op.execute('CREATE INDEX CONCURRENTLY ix_items_name ON items (no_such_column)')"
        ),
    )
    with fresh_database("postgresql", tmp_path) as url:
        settings = MigrateSettings(database_url=url)
        with pytest.raises(MigrationFailed) as failed:
            migrate(settings)
        message = str(failed.value)
        assert (failed.value.revision, failed.value.current_revision) == ("r2", "r1")
        assert message.startswith("revision r2 failed: ProgrammingError"), message
        assert "no_such_column" in message
        assert "the database is left at r1" in message
        assert "autocommit_block() statements ran outside the migration's transaction" in message
        # ...as they did: r1 and the new enum value are committed.
        assert execute(url, "SELECT enum_range(NULL::mood)::text")[0] == [("{happy,sad,ok}",)]
        assert current_revisions(url) == {"r1"}

        # A unique index built concurrently on duplicates fails half-way: INVALID, and named.
        add_revision(
            location,
            "r2",
            "r1",
            upgrade=(
                "with op.get_context().autocommit_block():\n"
                "    op.execute(\"ALTER TYPE mood ADD VALUE IF NOT EXISTS 'ok'\")\n"
                "    op.execute('CREATE UNIQUE INDEX CONCURRENTLY ix_items_mood ON items (mood)')"
            ),
        )
        with pytest.raises(MigrationFailed) as failed:
            migrate(settings)
        assert "INVALID index(es)" in str(failed.value)
        assert "public.ix_items_mood" in str(failed.value)
        assert execute(
            url,
            "SELECT i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'ix_items_mood'",
        )[0] == [(False,)]

        # Fixed as the message says: the lock was released, the next start goes through.
        execute(url, "DROP INDEX ix_items_mood")
        add_revision(
            location,
            "r2",
            "r1",
            upgrade=(
                "with op.get_context().autocommit_block():\n"
                "    op.execute(\"ALTER TYPE mood ADD VALUE IF NOT EXISTS 'ok'\")\n"
                "    op.execute('CREATE INDEX CONCURRENTLY ix_items_name ON items (name)')"
            ),
        )
        result = migrate(settings.model_copy(update={"lock_timeout": 5.0}))
        assert (result.action, result.applied) == ("upgraded", ["r2"])


# -- MariaDB and SQLite: the block works where it is merely allowed -----------------------------

BLOCKS = {
    # MariaDB commits DDL anyway; an online index build is the usual reason to write the block.
    "mariadb": (
        "with op.get_context().autocommit_block():\n"
        "    op.execute(\n"
        "        'ALTER TABLE t1 ADD INDEX ix_t1_name (name), ALGORITHM=INPLACE, LOCK=NONE'\n"
        "    )\n"
        "op.execute(\"INSERT INTO t1 (name) VALUES ('after')\")"
    ),
    # SQLite refuses VACUUM inside a transaction.
    "sqlite": (
        "with op.get_context().autocommit_block():\n"
        "    op.execute('VACUUM')\n"
        "op.execute(\"INSERT INTO t1 (name) VALUES ('after')\")"
    ),
}


@pytest.mark.parametrize("backend", ["mariadb", "sqlite"])
def test_autocommit_block_under_racing_processes(
    project: Path, tmp_path: Path, backend: str
) -> None:
    require_backend(backend)
    location = write_migrations(project, 1)
    add_revision(location, "r2", "r1", upgrade=BLOCKS[backend])
    with fresh_database(backend, tmp_path) as url:
        results = race(project, url)
        assert [r[1] for r in results if r[0] == "upgraded"] == ["r1,r2"]
        assert execute(url, "SELECT name FROM t1")[0] == [("after",)]
        assert current_revisions(url) == {"r2"}
        if backend == "mariadb":
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            try:
                indexes = sa.inspect(engine).get_indexes("t1")
            finally:
                engine.dispose()
            assert [i["name"] for i in indexes] == ["ix_t1_name"]


def test_sqlite_outside_the_block_stays_transactional(project: Path, tmp_path: Path) -> None:
    """After the block the revision is back in a transaction: its failure undoes the rest."""
    location = write_migrations(project, 1)
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=(
            "with op.get_context().autocommit_block():\n"
            "    op.execute('VACUUM')\n"
            "op.create_table('after', sa.Column('id', sa.Integer))\n"
            "op.execute(\"INSERT INTO t1 (name) VALUES ('after')\")\n"
            "raise RuntimeError('r2 gives up')"
        ),
    )
    with fresh_database("sqlite", tmp_path) as url:
        with pytest.raises(MigrationFailed, match="revision r2 failed: RuntimeError: r2 gives up"):
            migrate(MigrateSettings(database_url=url))
        assert table_names(url) == {"alembic_version", "t1"}
        assert execute(url, "SELECT count(*) FROM t1")[0] == [(0,)]
        assert current_revisions(url) == {"r1"}
