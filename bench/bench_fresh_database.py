"""Fresh database: ``empty_database=create_all`` (tables from the models, stamp head) vs replaying
every revision, at 50 and 200 revisions, on SQLite and PostgreSQL.

Each measurement is one ``migrate()`` call on a new, empty database (a new SQLite file, or a
``CREATE DATABASE`` made and dropped outside the timing), in this process; the two strategies
alternate so that drift on a shared machine hits both alike.

Run: ``python bench/bench_fresh_database.py [--repeat 5] [--sizes 50,200]
[--backends sqlite,postgresql]``.

``--startup 116`` measures the first start instead (issue 22, point 12): a uvicorn process
started on a fresh database, from process start to the first 200, with ``migrate_on_startup()``
against the naive lifespan that calls Alembic's ``command.upgrade`` in a thread, alternating,
the same history and env.py for both.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    fresh_database,
    machine,
    median_ms,
    metadata_for,
    table,
    write_history,
)
from fastapi_migrate import MigrateSettings, migrate
from tests.support import start_uvicorn, stop, subprocess_env, wait_http

OURS = """\
from fastapi import FastAPI
from fastapi_migrate import migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())


@app.get("/")
def root() -> dict[str, bool]:
    return {"ok": True}
"""

NAIVE = """\
import os
from contextlib import asynccontextmanager

import anyio.to_thread
from alembic import command
from alembic.config import Config
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    cfg = Config()
    cfg.set_main_option("script_location", os.environ["MIGRATE_SCRIPT_LOCATION"])
    cfg.set_main_option("sqlalchemy.url", os.environ["DATABASE_URL"])
    await anyio.to_thread.run_sync(command.upgrade, cfg, "head")
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
def root() -> dict[str, bool]:
    return {"ok": True}
"""


def one(backend: str, location: Path, metadata: sa.MetaData, strategy: str, work: Path) -> float:
    with fresh_database(backend, work) as url:
        settings = MigrateSettings(
            database_url=url, script_location=str(location), empty_database=strategy
        )
        started = time.perf_counter()
        result = migrate(settings, metadata=metadata)
        seconds = time.perf_counter() - started
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            tables = len(sa.inspect(conn).get_table_names())
        engine.dispose()
    expected = "created" if strategy == "create_all" else "upgraded"
    if result.action != expected or tables != len(metadata.tables) + 1:
        raise RuntimeError(f"{strategy}: {result.action}, {tables} tables")
    return seconds


def first_start(app: str, location: Path, work: Path) -> float:
    """Seconds from starting ``uvicorn app:app`` on a fresh PostgreSQL database to its first
    200; the database must then be at head."""
    with fresh_database("postgresql", work) as url:
        env = subprocess_env(DATABASE_URL=url, MIGRATE_SCRIPT_LOCATION=str(location))
        started = time.perf_counter()
        proc, port = start_uvicorn(f"{app}:app", work, env)
        try:
            status = wait_http(port, "/", proc, timeout=300)
            seconds = time.perf_counter() - started
        finally:
            stop(proc)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            tables = len(sa.inspect(conn).get_table_names())
        engine.dispose()
    if status != 200 or tables < 2:
        raise RuntimeError(f"{app}: status {status}, {tables} tables")
    return seconds


def startup(revisions: int, repeat: int) -> None:
    """The first start on a fresh database, ours against the naive lifespan, side by side."""
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="fm-bench-first-") as tmp:
        work = Path(tmp)
        location = write_history(work / "history", revisions)
        (work / "ours.py").write_text(OURS)
        (work / "naive.py").write_text(NAIVE)
        samples: dict[str, list[float]] = {"ours": [], "naive": []}
        first_start("ours", location, work)  # warm-up: .pyc of the app and the revisions
        first_start("naive", location, work)
        for round_ in range(repeat):
            order = ["ours", "naive"] if round_ % 2 == 0 else ["naive", "ours"]
            for app in order:
                samples[app].append(first_start(app, location, work))
            print(
                f"round {round_ + 1}: ours {samples['ours'][-1]:.2f}s, "
                f"naive {samples['naive'][-1]:.2f}s",
                file=sys.stderr,
                flush=True,
            )
    ours, naive = (statistics.median(samples[k]) for k in ("ours", "naive"))
    ratios = sorted(o / n for o, n in zip(samples["ours"], samples["naive"], strict=True))
    print(
        table(
            [
                "revisions",
                "migrate_on_startup",
                "command.upgrade in a thread",
                "ours / naive",
                "per-round ratios",
            ],
            [
                [
                    str(revisions),
                    f"{ours:.2f} s",
                    f"{naive:.2f} s",
                    f"{ours / naive:.2f}x",
                    ", ".join(f"{r:.2f}" for r in ratios),
                ]
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="50,200")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--startup", type=int, default=0, metavar="REVISIONS")
    args = parser.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.startup:
        startup(args.startup, args.repeat)
        return
    print(f"machine: {machine()}")
    print(f"fresh database, median of {args.repeat} migrate() calls per cell; ms")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fm-bench-fresh-") as tmp:
        work = Path(tmp)
        for size in (int(s) for s in args.sizes.split(",")):
            location = write_history(work / f"n{size}", size)
            metadata = metadata_for(size)
            for backend in args.backends.split(","):
                samples: dict[str, list[float]] = {"create_all": [], "upgrade": []}
                one(backend, location, metadata, "upgrade", work)  # warm-up: .pyc, dialect
                for _ in range(args.repeat):
                    for strategy in samples:
                        samples[strategy].append(one(backend, location, metadata, strategy, work))
                create_all = median_ms(samples["create_all"])
                replay = median_ms(samples["upgrade"])
                rows.append(
                    [
                        str(size),
                        backend,
                        f"{create_all:.0f}",
                        f"{replay:.0f}",
                        f"{replay / create_all:.1f}x",
                    ]
                )
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(table(["revisions", "database", "create_all", "replay", "replay / create_all"], rows))


if __name__ == "__main__":
    main()
