"""Per-test cost of ``migrated_database_url`` (a copy of a template migrated once) and of
``migrated_connection`` (a transaction rolled back on one shared copy) against the naive fixture
that runs ``command.upgrade(cfg, "head")`` for every test, at 10, 50 and 200 revisions, on
SQLite, PostgreSQL and MariaDB, side by side in one process. Every test body commits one row
(through a ``Session`` for the rollback fixture, as the README's recipe does) and checks it sees
exactly that row. On PostgreSQL and MariaDB a test's database is reset (in the background,
while the next test runs on another) and lent again where the server proves it clean: the
"reused" column counts them. The rerun column: the plugin's setup (``Janitor.kept_template``)
of a first run, which migrates, against a second run's, which finds the template kept.

The naive way makes a new empty database per test, upgrades it and drops it afterwards. A
sample is ten tests in a row, divided by ten, including the wait for the resets and drops still
running in the background at its end; samples alternate with the naive way's so that drift on a
shared machine hits both alike. Two histories: ``tables`` (revision k creates table tk: the
schema grows with the revisions) and ``columns`` (ten tables, every later revision adds a
column: the schema's size stays put), to show what a test database's cost follows.

``--rerun``: instead, a run's setup up to its first test's database (template and first
database), first run against second run, in-process, at ``--sizes`` (200 by default there).

``--slope``: instead, the per-test cost of ``migrated_database_url`` as the slope between a
suite of 10 tests and one of 40 (fixed costs, the first copy and the last reset, cancel out),
against upgrade-per-test, at ``--sizes`` (200 by default there), history ``tables``.

Run: ``python bench/bench_fixtures.py [--repeat 5] [--sizes 10,50,200]
[--backends sqlite,postgresql,mariadb] [--shapes tables,columns] [--slope] [--rerun]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session

from bench._common import machine, median_ms, table, write_history
from fastapi_migrate import MigrateSettings
from fastapi_migrate.backends.drivers import sync_url
from fastapi_migrate.testing.janitor import Janitor, MigratedTemplate, database_server
from fastapi_migrate.testing.pool import drop_pool
from fastapi_migrate.testing.rollback import WorkerDatabase
from tests.support import MARIADB_SERVER, PG_SERVER, server_problem

SERVERS = {"sqlite": None, "postgresql": PG_SERVER, "mariadb": MARIADB_SERVER}
BLOCK = 10  # copies timed in a row, as a suite's tests run, background drops waited for

_ADD_COLUMN = """\
from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("t{table}", sa.Column("c{k}", sa.String(20)))


def downgrade() -> None:
    op.drop_column("t{table}", "c{k}")
"""


def write_columns_history(root: Path, revisions: int) -> Path:
    """Ten one-table revisions, then revisions that each add a column to one of those tables."""
    location = write_history(root, min(revisions, 10))
    for k in range(11, revisions + 1):
        text = _ADD_COLUMN.format(
            rev=f"{k:04d}abcdef01", down=f"{k - 1:04d}abcdef01", table=(k % 10) + 1, k=k
        )
        (location / "versions" / f"{k:04d}abcdef01_add_column_c{k}.py").write_text(text)
    return location


_INSERT = sa.text("INSERT INTO t1 (name) VALUES ('mine')")
_COUNT = sa.text("SELECT count(*) FROM t1")


def committed_write(url: str) -> None:
    """The test body on a database of its own: an engine, one committed row, read back."""
    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(_INSERT)
        with engine.connect() as conn:
            assert conn.execute(_COUNT).scalar() == 1
    finally:
        engine.dispose()


def naive(janitor: Janitor, location: Path) -> Callable[[], None]:
    """One test, the usual way: a new empty database, ``upgrade head``, the body, drop."""

    def one() -> None:
        with janitor.empty_database() as url:
            cfg = Config()
            cfg.set_main_option("script_location", str(location))
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
            command.upgrade(cfg, "head")
            committed_write(url)

    return one


def measure(backend: str, shape: str, size: int, repeat: int, work: Path) -> list[str]:
    root = work / f"{backend}-{shape}-{size}"
    root.mkdir()
    writer = write_history if shape == "tables" else write_columns_history
    with contextlib.redirect_stdout(io.StringIO()):  # `alembic init` talks
        location = writer(root, size)
    janitor = Janitor(database_server(SERVERS[backend], root / "databases"))
    settings = MigrateSettings(database_url="sqlite://", script_location=str(location))
    worker: WorkerDatabase | None = None
    try:
        started = time.perf_counter()
        template = janitor.kept_template(settings, run="first")
        template_ms = (time.perf_counter() - started) * 1000
        rerun_janitor = Janitor(janitor.server)  # a second run: a new janitor, same project
        started = time.perf_counter()
        rerun = rerun_janitor.kept_template(settings, run="second")
        rerun_ms = (time.perf_counter() - started) * 1000
        assert rerun.result is None and rerun.name == template.name
        worker = WorkerDatabase(template)

        def copies(count: int) -> float:
            """Seconds per test for ``count`` tests in a row, their drops included."""
            started = time.perf_counter()
            for _ in range(count):
                with template.copy() as url:
                    committed_write(url)
            janitor.reused_copies(template.name).settle()  # the last reset counts too
            janitor.wait_for_drops()
            return (time.perf_counter() - started) / count

        def rollbacks(count: int) -> float:
            assert worker is not None
            started = time.perf_counter()
            for _ in range(count):
                with (
                    worker.connection() as conn,
                    Session(bind=conn, join_transaction_mode="create_savepoint") as s,
                ):
                    s.execute(_INSERT)
                    s.commit()
                    assert s.execute(_COUNT).scalar() == 1
            return (time.perf_counter() - started) / count

        upgrade = naive(janitor, location)
        copies(1)  # warm every path (imports, first connection) before timing
        rollbacks(1)
        upgrade()
        copy_samples: list[float] = []
        rollback_samples: list[float] = []
        upgrades: list[float] = []
        for _ in range(repeat):
            copy_samples.append(copies(BLOCK))
            rollback_samples.append(rollbacks(BLOCK * 10))
            started = time.perf_counter()
            upgrade()
            upgrades.append(time.perf_counter() - started)
        assert worker.replacements == 0
        lent = janitor.reused_copies(template.name)
        reused = f"{lent.reuses}/{lent.reuses + lent.copies}"
    finally:
        if worker is not None:
            worker.close()
        janitor.close()
        janitor.server.drop(template.name)  # a benchmark's template is not worth keeping
    up, cp, rb = median_ms(upgrades), median_ms(copy_samples), median_ms(rollback_samples)
    return [
        backend,
        shape,
        str(size),
        f"{up:.1f}",
        f"{cp:.2f}",
        f"{up / cp:.1f}x",
        reused,
        f"{rb:.3f}",
        f"{up / rb:.0f}x",
        f"{template_ms:.0f}",
        f"{rerun_ms:.1f}",
        f"{template_ms / rerun_ms:.0f}x",
    ]


def slope(backend: str, size: int, repeat: int, work: Path) -> list[str]:
    """Per test, as the slope between suites of 10 and 40 tests, against upgrade-per-test."""
    root = work / f"slope-{backend}-{size}"
    root.mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        location = write_history(root, size)
    folder = root / "databases"
    janitor = Janitor(database_server(SERVERS[backend], folder), kept_list=folder / "kept.txt")
    settings = MigrateSettings(database_url="sqlite://", script_location=str(location))
    template = janitor.kept_template(settings, run="slope")
    try:

        def suite(count: int) -> float:
            """Seconds for ``count`` tests in a row, as a fresh process's suite: databases
            from the warm pool (or copies), resets in the background, every drop and reset
            waited for at the end."""
            suite_janitor = Janitor(janitor.server, kept_list=folder / "kept.txt")
            started = time.perf_counter()
            try:
                for _ in range(count):
                    with MigratedTemplate(
                        suite_janitor, template.name, template.url, None
                    ).copy() as url:
                        committed_write(url)
                suite_janitor.reused_copies(template.name).settle()
                suite_janitor.wait_for_drops()
            finally:
                suite_janitor.drop_all()
            return time.perf_counter() - started

        upgrade = naive(janitor, location)
        upgrade()
        suite(2)
        slopes, upgrades = [], []
        for _ in range(repeat):
            slopes.append((suite(40) - suite(10)) / 30)
            started = time.perf_counter()
            upgrade()
            upgrades.append(time.perf_counter() - started)
    finally:
        drop_pool(janitor.server, template.name, folder)
        janitor.close()
        janitor.server.drop(template.name)
    up, per_test = median_ms(upgrades), median_ms(slopes)
    return [backend, str(size), f"{up:.1f}", f"{per_test:.2f}", f"{up / per_test:.1f}x"]


def rerun(backend: str, size: int, repeat: int, work: Path) -> list[str]:
    """A run's setup up to its first test's database, in-process (imports done): the first
    run's (migrates the template, copies it) against a second run's (finds the template kept,
    takes a database from the warm pool and proves it clean)."""
    root = work / f"rerun-{backend}-{size}"
    root.mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        location = write_history(root, size)
    settings = MigrateSettings(database_url="sqlite://", script_location=str(location))
    folder = root / "databases"
    server = database_server(SERVERS[backend], folder)
    firsts, seconds, name = [], [], ""
    try:
        for round_ in range(repeat):
            times = []
            for run in ("first", "second"):
                janitor = Janitor(server, kept_list=folder / "kept.txt")
                started = time.perf_counter()
                template = janitor.kept_template(
                    settings, run=f"{run}-{round_}", rebuild=run == "first"
                )
                with template.copy() as url:
                    times.append(time.perf_counter() - started)
                    committed_write(url)
                copies = janitor.reused_copies(template.name)
                if run == "second":
                    assert template.result is None and copies.copies == 0, "a rerun copied"
                janitor.drop_all()
                name = template.name
            firsts.append(times[0])
            seconds.append(times[1])
    finally:
        if name:
            drop_pool(server, name, folder)
            server.drop(name)
        server.close()
    first, second = median_ms(firsts), median_ms(seconds)
    return [backend, str(size), f"{first:.0f}", f"{second:.1f}", f"{second / first:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default=None)
    parser.add_argument("--backends", default="sqlite,postgresql,mariadb")
    parser.add_argument("--shapes", default="tables,columns")
    parser.add_argument("--slope", action="store_true")
    parser.add_argument("--rerun", action="store_true")
    args = parser.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("fastapi_migrate").setLevel(logging.WARNING)
    print(machine())
    if args.rerun or args.slope:
        measure = rerun if args.rerun else slope
        headers = (
            ["backend", "revisions", "first run: template + first database (ms)",
             "second run: the same (ms)", "second / first"]
            if args.rerun
            else ["backend", "revisions", "upgrade head per test (ms)",
                  "migrated_database_url per test, slope 10 to 40 (ms)", "ratio"]
        )  # fmt: skip
        measured = []
        with tempfile.TemporaryDirectory(prefix=f"bench-{measure.__name__}-") as tmp:
            for backend in args.backends.split(","):
                server = SERVERS[backend]
                if server and server_problem(server):
                    print(f"skipping {backend}: {server_problem(server)}")
                    continue
                for size in (int(s) for s in (args.sizes or "200").split(",")):
                    measured.append(measure(backend, size, args.repeat, Path(tmp)))
                    print("  " + " | ".join(measured[-1]), flush=True)
        print()
        print(table(headers, measured))
        return
    args.sizes = args.sizes or "10,50,200"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fixtures-") as tmp:
        for backend in args.backends.split(","):
            server = SERVERS[backend]
            problem = server_problem(server) if server else None
            if problem:
                print(f"skipping {backend}: {problem}")
                continue
            for shape in args.shapes.split(","):
                for size in (int(s) for s in args.sizes.split(",")):
                    if shape == "columns" and size <= 10:
                        continue  # the same history as "tables"
                    rows.append(measure(backend, shape, size, args.repeat, Path(tmp)))
                    print("  " + " | ".join(rows[-1]), flush=True)
    print()
    print(
        table(
            [
                "backend",
                "history",
                "revisions",
                "upgrade head per test (ms)",
                "migrated_database_url per test (ms)",
                "ratio",
                "databases reused / lent",
                "migrated_connection per test (ms)",
                "ratio",
                "first run's setup (ms)",
                "second run's setup (ms)",
                "first / second",
            ],
            rows,
        )
    )
    print()
    print(verdicts(rows))


# The targets at 200 revisions, one history of tables: ratios to upgrade-per-test.
COPY_TARGETS = {"sqlite": 250.0, "postgresql": 20.0, "mariadb": 20.0}
ROLLBACK_TARGET = 200.0
RERUN_TARGET = 10.0


def verdicts(rows: list[list[str]]) -> str:
    """Per backend and history: is the copy flat as revisions grow, and are the targets met?"""
    lines = []
    for backend, shape in dict.fromkeys((r[0], r[1]) for r in rows):
        mine = [r for r in rows if (r[0], r[1]) == (backend, shape)]
        first, last = mine[0], mine[-1]
        growth = float(last[4]) / float(first[4])
        line = (
            f"{backend}, {shape}: copy per test {first[4]} ms at {first[2]} revisions, "
            f"{last[4]} ms at {last[2]} ({growth:.2f}x)"
        )
        if last[2] == "200" and shape == "tables":
            copy = float(last[5].rstrip("x"))
            rollback = min(float(r[8].rstrip("x")) for r in mine)
            rerun = float(last[11].rstrip("x"))
            target = COPY_TARGETS[backend]
            line += f"; copy {copy:.0f}x at 200 (target {target:.0f}x: "
            line += "met)" if copy >= target else "NOT met)"
            line += f"; rollback at least {rollback:.0f}x at every size (target "
            line += f"{ROLLBACK_TARGET:.0f}x: " + (
                "met)" if rollback >= ROLLBACK_TARGET else "NOT met)"
            )
            line += f"; second run's setup 1/{rerun:.0f} of the first (target 1/"
            line += f"{RERUN_TARGET:.0f}: " + ("met)" if rerun >= RERUN_TARGET else "NOT met)")
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
