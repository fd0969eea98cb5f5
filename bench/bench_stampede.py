"""Stampede: 16 processes start at once on one PostgreSQL database, vs 1 process.

Each child imports everything, says it is ready, and waits; the parent releases them all at
once and measures the wall time until every ``migrate()`` call has returned (imports
excluded). Two scenarios, each on a fresh database per round:

- ``deploy``: the database is empty and N revisions must be replayed: one process migrates,
  the others wait for the lock, then find the database at head;
- ``restart``: the database is already at head: every process does a no-op start.

Run: ``python bench/bench_stampede.py [--processes 16] [--revisions 50] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    child_env,
    fresh_database,
    machine,
    median_ms,
    table,
    write_history,
)
from fastapi_migrate import MigrateSettings, migrate

CHILD = """
import json, sys, time
url, location = sys.argv[1:3]
import sqlalchemy.dialects.postgresql, psycopg
import alembic.runtime.migration, alembic.ddl.postgresql, alembic.command
from fastapi_migrate import MigrateSettings, migrate
settings = MigrateSettings(database_url=url, script_location=location)
print("ready", flush=True)
sys.stdin.readline()
result = migrate(settings)
print(json.dumps({"done": time.monotonic(), "action": result.action}), flush=True)
"""


def stampede(processes: int, url: str, location: Path, cwd: Path) -> tuple[float, list[str]]:
    """Wall seconds from the release of ``processes`` ready children until all returned."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(location)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=child_env(),
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"child not ready: {line!r} {child.stderr.read()[-2000:]}")
        released = time.monotonic()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        actions, done = [], []
        for child in children:
            out, err = child.communicate(timeout=600)
            if child.returncode != 0:
                raise RuntimeError(f"child failed: {err[-3000:]}")
            report = json.loads(out.strip().splitlines()[-1])
            actions.append(report["action"])
            done.append(report["done"])
        return max(done) - released, sorted(actions)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--revisions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"stampede on PostgreSQL, {args.revisions} revisions, median of {args.repeat} rounds, "
        "each on a fresh database; wall ms from release to the last migrate() returning"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="fm-bench-stampede-") as tmp:
        work = Path(tmp)
        location = write_history(work, args.revisions)
        with fresh_database("postgresql", work) as url:  # writes the .pyc files once
            migrate(MigrateSettings(database_url=url, script_location=str(location)))
        for scenario in ("deploy", "restart"):
            samples: dict[int, list[float]] = {1: [], args.processes: []}
            for _ in range(args.repeat):
                for count in samples:
                    with fresh_database("postgresql", work) as url:
                        if scenario == "restart":
                            migrate(
                                MigrateSettings(database_url=url, script_location=str(location))
                            )
                        seconds, actions = stampede(count, url, location, work)
                    migrations = actions.count("upgraded")
                    if (
                        migrations != (1 if scenario == "deploy" else 0)
                        or actions.count("noop") != count - migrations
                    ):
                        raise RuntimeError(f"{scenario}, {count} processes: {actions}")
                    samples[count].append(seconds)
            one = median_ms(samples[1])
            many = median_ms(samples[args.processes])
            rows.append(
                [scenario, str(args.revisions), f"{one:.0f}", f"{many:.0f}", f"{many / one:.2f}x"]
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    header = ["scenario", "revisions", "1 process", f"{args.processes} processes", "ratio"]
    print(table(header, rows))
    print(f"target: {args.processes} processes within 1.5x of 1 process")


if __name__ == "__main__":
    main()
