"""``migrated_database_url`` on PostgreSQL and MariaDB reuses a test's database for the next
test: whatever a test did, the next one must get a database indistinguishable from a fresh copy
of the template. The judge is independent of the code under test: ``pg_dump`` / ``mariadb-dump``
(schema, rows, sequence and AUTO_INCREMENT values, grants, comments) of the database the next
test gets, against the dump of a fresh copy."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import MigrateSettings
from fastapi_migrate.testing.janitor import Janitor, MigratedTemplate, database_server
from fastapi_migrate.testing.pool import drop_pool

from .conftest import require_backend, skip_unless_ci
from .plugin_helpers import run_inner
from .support import MARIADB_SERVER, PG_SERVER, add_revision, write_migrations

pytest_plugins = ["pytester", "tests.plugin_fixtures"]

SERVERS = {"postgresql": PG_SERVER, "mariadb": MARIADB_SERVER}

SCHEMA = """\
op.create_table('authors', sa.Column('id', sa.Integer, primary_key=True),
                sa.Column('name', sa.String(50), nullable=False))
op.create_table('books', sa.Column('id', sa.Integer, primary_key=True),
                sa.Column('author_id', sa.Integer, sa.ForeignKey('authors.id'), nullable=False),
                sa.Column('title', sa.String(100), server_default='untitled'),
                sa.Column('price', sa.Numeric(8, 2)))
op.create_index('ix_books_title', 'books', ['title'])
genres = op.create_table('genres', sa.Column('id', sa.Integer, primary_key=True),
                         sa.Column('name', sa.String(30), unique=True))
op.bulk_insert(genres, [{'id': 1, 'name': 'poetry'}, {'id': 2, 'name': 'essays'}])
op.execute("INSERT INTO authors (name) VALUES ('seeded')")
op.execute("CREATE VIEW book_titles AS SELECT id, title FROM books")
notes = op.create_table('genre_notes', sa.Column('id', sa.Integer, primary_key=True),
                        sa.Column('genre_id', sa.Integer,
                                  sa.ForeignKey('genres.id', ondelete='CASCADE')))
op.bulk_insert(notes, [{'id': 1, 'genre_id': 1}])
"""

Action = Callable[[sa.Engine], None]


def _statements(*statements: str) -> Action:
    def run(engine: sa.Engine) -> None:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    return run


def _rolled_back_inserts(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("INSERT INTO authors (name) VALUES ('gone')")
        conn.rollback()


_kept_open: list[sa.Connection] = []


def _open_transaction(engine: sa.Engine) -> None:
    conn = engine.connect()  # never closed: the test "forgets" it, mid-transaction
    conn.exec_driver_sql("INSERT INTO authors (name) VALUES ('uncommitted')")
    _kept_open.append(conn)


def _idle_connection(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO authors (name) VALUES ('committed')")
    _kept_open.append(engine.connect())


def _failing(engine: sa.Engine) -> None:
    _statements("INSERT INTO authors (name) VALUES ('then failed')")(engine)
    raise RuntimeError("the test failed")


COMMON: dict[str, Action] = {
    "insert": _statements(
        "INSERT INTO authors (name) VALUES ('a')",
        "INSERT INTO books (author_id, title, price) VALUES (2, 't', 9.5)",
    ),
    "insert update delete": _statements(
        "INSERT INTO authors (name) VALUES ('a'), ('b')",
        "UPDATE authors SET name = 'c' WHERE name = 'a'",
        "DELETE FROM authors WHERE name = 'b'",
    ),
    "rolled back insert": _rolled_back_inserts,
    "transaction left open": _open_transaction,
    "connection left open": _idle_connection,
    "test failed": _failing,
}
"""What most tests do: the database is reset and lent again (no new copy)."""

OTHERS: dict[str, dict[str, Action]] = {
    "postgresql": {
        "update a seeded row": _statements("UPDATE genres SET name = 'verse' WHERE id = 1"),
        "delete a migration's row": _statements("DELETE FROM authors"),
        "truncate": _statements("TRUNCATE books"),
        "create table": _statements("CREATE TABLE extra (id int)"),
        "drop table": _statements("DROP TABLE genre_notes"),
        "alter column": _statements("ALTER TABLE books ALTER COLUMN price TYPE numeric(10, 2)"),
        "add then drop a column": _statements(
            "ALTER TABLE books ADD COLUMN isbn text", "ALTER TABLE books DROP COLUMN isbn"
        ),
        "grant": _statements("GRANT SELECT ON books TO PUBLIC"),
        "comment": _statements("COMMENT ON TABLE books IS 'changed'"),
        "advance a sequence": _statements("SELECT nextval('books_id_seq')"),
        "setval not called": _statements("SELECT setval('books_id_seq', 100, false)"),
        "restart identity": _statements("TRUNCATE authors, books RESTART IDENTITY"),
        "create statistics": _statements("CREATE STATISTICS st ON author_id, title FROM books"),
        "sequence owned by none": _statements("ALTER SEQUENCE books_id_seq OWNED BY NONE"),
        "create function": _statements(
            "CREATE FUNCTION two() RETURNS int LANGUAGE sql AS 'SELECT 2'"
        ),
    },
    "mariadb": {
        "update a seeded row": _statements("UPDATE genres SET name = 'verse' WHERE id = 1"),
        "delete a migration's row": _statements("DELETE FROM authors"),
        "truncate": _statements("TRUNCATE books"),
        "create table": _statements("CREATE TABLE extra (id int)"),
        "drop table": _statements("DROP TABLE genre_notes"),
        "alter column": _statements("ALTER TABLE books MODIFY price decimal(10, 2)"),
        "add then drop a column": _statements(
            "ALTER TABLE books ADD COLUMN isbn text", "ALTER TABLE books DROP COLUMN isbn"
        ),
        "comment": _statements("ALTER TABLE books COMMENT 'changed'"),
        "grant": _statements(
            "CREATE USER IF NOT EXISTS 'fm_reuse_reader'@'localhost'",
            "GRANT SELECT ON books TO 'fm_reuse_reader'@'localhost'",
        ),
        "auto increment": _statements("ALTER TABLE books AUTO_INCREMENT = 100"),
        "create procedure": _statements("CREATE PROCEDURE two() SELECT 2"),
    },
}
"""Rarer things a test may do: reset or copied afresh, the next test cannot tell."""


def _dump(backend: str, url: str) -> str:
    """The database as its server's own dump tool prints it, with its name taken out."""
    parsed = sa.make_url(url)
    name = str(parsed.database)
    tool = "pg_dump" if backend == "postgresql" else "mariadb-dump"
    if shutil.which(tool) is None:
        skip_unless_ci(f"{tool} not installed: it judges the reused databases")
    if backend == "postgresql":
        args = [tool, "-h", str(parsed.host), "-p", str(parsed.port), "-U", str(parsed.username)]
        args += ["--no-sync", name]
    else:
        args = [tool, "-h", str(parsed.host), "-P", str(parsed.port), "-u", str(parsed.username)]
        args += ["--routines", "--events", "--triggers", "--skip-dump-date", "--skip-comments"]
        args += ["--skip-extended-insert", "--order-by-primary", name]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    lines = [
        line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    ]
    text = "\n".join(lines).replace(name, "<db>")
    if backend == "postgresql":  # what pg_dump prints only with --create
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT datacl, datconnlimit, shobj_description(d.oid, 'pg_database'), "
                "(SELECT array_agg(setconfig) FROM pg_db_role_setting WHERE setdatabase = d.oid) "
                "FROM pg_database d WHERE datname = current_database()"
            ).one()
            text += f"\ndatabase {tuple(row)}".replace(name, "<db>")
        engine.dispose()
    if backend == "mariadb":  # grants on the database live outside it
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            for view in ("SCHEMA_PRIVILEGES", "TABLE_PRIVILEGES", "COLUMN_PRIVILEGES"):
                rows = conn.exec_driver_sql(
                    f"SELECT * FROM information_schema.{view} WHERE TABLE_SCHEMA = %s "
                    "ORDER BY 1, 2, 3, 4",
                    (name,),
                ).all()
                text += f"\n{view} {sorted(map(str, rows))}".replace(name, "<db>")
        engine.dispose()
    return text


@pytest.fixture
def template(backend: str, tmp_path: Path) -> Iterator[tuple[Janitor, MigratedTemplate]]:
    require_backend(backend)
    location = write_migrations(tmp_path, 0)
    add_revision(location, "r1", None, upgrade=SCHEMA, downgrade="pass")
    janitor = Janitor(database_server(SERVERS[backend], tmp_path))
    try:
        settings = MigrateSettings(database_url="sqlite://", script_location=str(location))
        yield janitor, janitor.migrated_template(settings)
    finally:
        for conn in _kept_open:
            conn.invalidate()
        _kept_open.clear()
        janitor.close()
        if backend == "mariadb":  # a user is the server's, not the database's
            engine = sa.create_engine(SERVERS[backend], poolclass=sa.pool.NullPool)
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP USER IF EXISTS 'fm_reuse_reader'@'localhost'")
            engine.dispose()


def _fresh_dump(backend: str, janitor: Janitor, template: MigratedTemplate) -> str:
    name, url = janitor.copy_kept(template.name)
    try:
        return _dump(backend, url)
    finally:
        janitor.drop(name)


def _after(template: MigratedTemplate, action: Action) -> None:
    """A test that does ``action`` on its database, the way a test would."""
    failing = action is _failing
    expected = pytest.raises(RuntimeError) if failing else contextlib.nullcontext()
    with expected, template.copy() as url:
        engine = sa.create_engine(url)
        kept = len(_kept_open)
        try:
            action(engine)
        finally:
            if len(_kept_open) == kept:
                engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_what_tests_commonly_do_is_undone_and_the_database_lent_again(
    backend: str, template: tuple[Janitor, MigratedTemplate]
) -> None:
    janitor, migrated = template
    fresh = _fresh_dump(backend, janitor, migrated)
    copies = janitor.reused_copies(migrated.name)
    for label, action in COMMON.items():
        _after(migrated, action)
        with migrated.copy() as url:
            assert _dump(backend, url) == fresh, f"after a test that did: {label}"
    copies.settle()
    assert copies.copies == 2, "two databases took turns: one in use, the other being reset"
    assert copies.reuses == 2 * len(COMMON), "every test's database was reset and lent again"


@pytest.mark.parametrize(
    ("backend", "label"),
    [(backend, label) for backend, actions in OTHERS.items() for label in actions],
)
def test_whatever_a_test_did_the_next_gets_a_fresh_copys_state(
    backend: str, label: str, template: tuple[Janitor, MigratedTemplate]
) -> None:
    janitor, migrated = template
    fresh = _fresh_dump(backend, janitor, migrated)
    _after(migrated, OTHERS[backend][label])
    with migrated.copy() as url:
        assert _dump(backend, url) == fresh, f"after a test that did: {label}"


INNER_TESTS = """\
import pytest
import sqlalchemy as sa

LEFT_OPEN = []


COMMITTED = {
    "insert": "INSERT INTO child (parent_id, name) VALUES (1, 'a'), (1, 'b')",
    "update seed": "UPDATE t1 SET name = 'changed'",
    "delete seed": "DELETE FROM t1",
    "add column": "ALTER TABLE t2 ADD COLUMN extra integer",
    "create table": "CREATE TABLE extra (id integer)",
    "fail": "INSERT INTO t3 (id, name) VALUES (8, 'then failed')",
}


def dirty(engine, kind):
    if kind in COMMITTED:
        with engine.begin() as c:
            c.exec_driver_sql(COMMITTED[kind])
    if kind == "open transaction":
        c = engine.connect()
        c.exec_driver_sql("INSERT INTO t3 (id, name) VALUES (7, 'uncommitted')")
        LEFT_OPEN.append(c)
    elif kind == "fail":
        raise RuntimeError("this test fails on purpose")


KINDS = ["insert", "update seed", "delete seed", "add column", "create table",
         "open transaction", "fail", "nothing"]


@pytest.mark.parametrize("k", range(4 * len(KINDS)))
def test_gets_a_fresh_copy(migrated_database_url, k):
    engine = sa.create_engine(migrated_database_url)
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT id, name FROM t1").all() == [(1, "seed")]
        assert c.exec_driver_sql("SELECT count(*) FROM t3").scalar() == 0
        assert [col["name"] for col in sa.inspect(c).get_columns("t2")] == ["id", "name"]
        assert not sa.inspect(c).has_table("extra")
        c.exec_driver_sql("INSERT INTO child (parent_id, name) VALUES (1, 'probe')")
        assert c.exec_driver_sql("SELECT max(id) FROM child").scalar() == 1
        c.rollback()
    dirty(engine, KINDS[k % len(KINDS)])
"""


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_under_xdist_every_test_sees_a_fresh_copy(
    pytester: pytest.Pytester, user_project: Path, backend: str
) -> None:
    require_backend(backend)
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = run_inner(
        pytester, "-n", "2", "-p", "no:randomly", "--migrate-db-url", SERVERS[backend]
    )
    result.assert_outcomes(passed=28, failed=4)
    failures = [line for line in result.outlines if line.startswith("FAILED")]
    assert len(failures) == 4
    assert all("RuntimeError: this test f" in line for line in failures), failures


@pytest.mark.parametrize("backend", ["mariadb"])
def test_mariadb_sees_an_alter_on_a_database_reset_long_ago(
    backend: str, template: tuple[Janitor, MigratedTemplate]
) -> None:
    """MariaDB skips reading every table's definition when no table's ``CREATE_TIME`` moved
    since the last reset and that reset was over a second after the last change: an ``ALTER``
    after that must still be seen."""
    janitor, migrated = template
    fresh = _fresh_dump(backend, janitor, migrated)
    copies = janitor.reused_copies(migrated.name)
    alters = {
        "alter column": OTHERS[backend]["alter column"],
        "add index": _statements("CREATE INDEX ix_books_price ON books (price)"),
        "column default": _statements("ALTER TABLE books ALTER COLUMN title SET DEFAULT 'x'"),
    }
    for label, action in alters.items():
        for _ in range(2):  # both databases that take turns: reset, then left alone a while
            _after(migrated, COMMON["insert"])
        copies.settle()
        time.sleep(2.2)
        for _ in range(2):  # reset again, now long after their tables were written
            _after(migrated, COMMON["insert"])
        copies.settle()
        _after(migrated, action)
        for _ in range(2):  # whichever of the two databases that test had
            with migrated.copy() as url:
                assert _dump(backend, url) == fresh, f"after a test that did: {label}"


LATER = {
    **OTHERS["postgresql"],
    "insert, then reset the statistics": _statements(
        "INSERT INTO authors (name) VALUES ('unseen?')", "SELECT pg_stat_reset()"
    ),
    "insert a seeded table's row: the reset's delete cascades to a seeded child": _statements(
        "INSERT INTO genres (id, name) VALUES (3, 'drama')"
    ),
    "alter the database's settings": _statements(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %%I SET work_mem = %%L', current_database(), "
        "'8MB'); END $$"
    ),
    "comment on the database and revoke connect": _statements(
        "DO $$ BEGIN EXECUTE format('COMMENT ON DATABASE %%I IS %%L', current_database(), 'x'); "
        "EXECUTE format('REVOKE CONNECT ON DATABASE %%I FROM PUBLIC', current_database()); END $$"
    ),
    "insert, then reset one table's statistics": _statements(
        "INSERT INTO books (author_id, title) VALUES (1, 'unseen?')",
        "SELECT pg_stat_reset_single_table_counters('books'::regclass)",
    ),
}
"""On PostgreSQL, from a database's second reset on, the row counters of the cumulative
statistics decide what is compared: whatever a test did must still be seen through them."""


@pytest.mark.parametrize("label", list(LATER))
def test_postgresql_sees_it_on_a_database_already_reset(
    label: str, template: tuple[Janitor, MigratedTemplate]
) -> None:
    janitor, migrated = template
    fresh = _fresh_dump("postgresql", janitor, migrated)
    copies = janitor.reused_copies(migrated.name)
    for _ in range(4):  # both databases that take turns, reset twice each
        _after(migrated, COMMON["insert"])
    _after(migrated, LATER[label])
    for _ in range(2):  # whichever of the two databases that test had
        with migrated.copy() as url:
            assert _dump("postgresql", url) == fresh, f"after a test that did: {label}"
    copies.settle()
    assert copies.copies <= 3, "the databases were reset, not copied again, until the last test"


@pytest.fixture
def backend() -> str:
    return "postgresql"


def test_postgresql_sees_a_statistics_reset_each_test_in_the_same_second(
    template: tuple[Janitor, MigratedTemplate],
) -> None:
    """A suite that resets the statistics at the start of every test (for query counts): two
    tests with the same writes, a fraction of a second apart, leave the same counters; the
    reset time tells them apart only to the microsecond."""
    janitor, migrated = template
    fresh = _fresh_dump("postgresql", janitor, migrated)
    action = _statements("SELECT pg_stat_reset()", "INSERT INTO authors (name) VALUES ('again')")
    for round_ in range(4):
        _after(migrated, action)  # both databases, one after the other
        _after(migrated, action)
        for _ in range(2):
            with migrated.copy() as url:
                assert _dump("postgresql", url) == fresh, f"round {round_}"


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_saved_snapshot_that_proves_nothing_is_replaced(backend: str, tmp_path: Path) -> None:
    """A snapshot an earlier run saved (another version's, say) that proves no database clean:
    the run's first copy gives a new one, saved, and databases are reused again (before, every
    test of every run got a new copy)."""
    require_backend(backend)
    location = write_migrations(tmp_path, 0)
    add_revision(location, "r1", None, upgrade=SCHEMA, downgrade="pass")
    settings = MigrateSettings(database_url="sqlite://", script_location=str(location))
    folder = tmp_path / "plugin"

    def run(tests: int) -> tuple[int, int]:
        janitor = Janitor(database_server(SERVERS[backend], folder), kept_list=folder / "k.txt")
        try:
            template = janitor.kept_template(settings, run=str(tests))
            for _ in range(tests):
                _after(template, COMMON["insert"])
            copies = janitor.reused_copies(template.name)
            copies.settle()
            return copies.copies, copies.reuses
        finally:
            janitor.close()

    try:
        run(3)
        (saved,) = folder.glob("*.snapshot")
        fresh = pickle.loads(saved.read_bytes())
        stale = dataclasses.replace(
            fresh,
            **(
                {"fingerprint": "stale", "signature": {}}
                if backend == "postgresql"
                else {"other_fingerprint": "stale"}
            ),
        )
        saved.write_bytes(pickle.dumps(stale))
        copies, reuses = run(6)
        assert reuses >= 4, f"{copies} copies, {reuses} reuses"
        assert pickle.loads(saved.read_bytes()) != stale
    finally:
        server = database_server(SERVERS[backend], folder)
        try:
            janitor = Janitor(server, kept_list=folder / "k.txt")
            template = janitor.kept_template(settings, run="cleanup")
            drop_pool(server, template.name, folder)
            server.drop(template.name)
        finally:
            server.close()
