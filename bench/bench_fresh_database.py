"""Fresh database: ``empty_database=create_all`` (tables from the models, stamp head) vs replaying
every revision, at 50 and 200 revisions, on SQLite and PostgreSQL.

Each measurement is one ``migrate()`` call on a new, empty database (a new SQLite file, or a
``CREATE DATABASE`` made and dropped outside the timing), in this process; the two strategies
alternate so that drift on a shared machine hits both alike.

Run: ``python bench/bench_fresh_database.py [--repeat 5] [--sizes 50,200]
[--backends sqlite,postgresql]``.
"""

from __future__ import annotations

import argparse
import logging
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="50,200")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
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
