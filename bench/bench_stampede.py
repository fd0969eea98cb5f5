"""Stampede: 16 processes start at once on one PostgreSQL database, vs 1 process.

Two clocks, each on a fresh database per round:

- ``released``: each child imports everything, says it is ready, and waits; the parent
  releases them all at once and measures until every ``migrate()`` has returned. This is what
  fastapi-migrate adds to a start: the lock, the waiting, the re-read of the version table.
- ``spawned``: from starting the processes until every ``migrate()`` has returned, imports
  included: "wall time until all are ready". On a machine with fewer cores than processes the
  imports alone take longer for 16 than for 1, so this is also measured with ``MIGRATE_MODE=off``
  (the same processes, no migration): its ratio shows what the migration adds on top.

Two scenarios: ``deploy``: the database is empty and N revisions must be replayed (one
process migrates, the others wait for the lock, then find the database at head); ``restart``:
the database is already at head (every process does a no-op start).

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
url, location, mode, wait = sys.argv[1:5]
import sqlalchemy.dialects.postgresql, psycopg
import alembic.runtime.migration, alembic.ddl.postgresql, alembic.command
from fastapi_migrate import MigrateSettings, migrate
settings = MigrateSettings(database_url=url, script_location=location, mode=mode)
print("ready", flush=True)
if wait == "wait":
    sys.stdin.readline()
result = migrate(settings)
print(json.dumps({"done": time.monotonic(), "action": result.action}), flush=True)
"""


def stampede(
    processes: int, url: str, location: Path, cwd: Path, *, clock: str, mode: str = "upgrade"
) -> tuple[float, list[str]]:
    """Wall seconds until all ``processes`` children's ``migrate()`` returned, counted from
    their release once imported (``clock="released"``) or from their spawn (``"spawned"``);
    and their actions. CLOCK_MONOTONIC is one clock for every process of the machine."""
    wait = "wait" if clock == "released" else "go"
    spawned = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(location), mode, wait],
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
        start = spawned
        if clock == "released":
            for child in children:  # blocked on stdin after "ready": nothing read ahead
                assert child.stdout is not None
                line = child.stdout.readline().strip()
                if line != "ready":
                    raise RuntimeError(f"child not ready: {line!r} {child.stderr.read()[-2000:]}")
            start = time.monotonic()
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
        return max(done) - start, sorted(actions)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _check(scenario: str, mode: str, count: int, actions: list[str]) -> None:
    """Exactly one process migrates a deploy, none a restart; every other one is a no-op."""
    if mode == "off":
        expected = ["skipped"] * count
    else:
        migrations = 1 if scenario == "deploy" else 0
        expected = sorted(["noop"] * (count - migrations) + ["upgraded"] * migrations)
    if actions != expected:
        raise RuntimeError(f"{scenario}, {count} processes, mode {mode}: {actions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--revisions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.processes
    print(f"machine: {machine()}")
    print(
        f"stampede on PostgreSQL, {args.revisions} revisions, median of {args.repeat} rounds, "
        "each on a fresh database; wall ms until the last migrate() returned"
    )
    # (clock, mode) cells, measured in turn within each round so drift hits all alike.
    cells = [("released", "upgrade"), ("spawned", "upgrade"), ("spawned", "off")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fm-bench-stampede-") as tmp:
        work = Path(tmp)
        location = write_history(work, args.revisions)
        with fresh_database("postgresql", work) as url:  # writes the .pyc files once
            migrate(MigrateSettings(database_url=url, script_location=str(location)))
        for scenario in ("deploy", "restart"):
            samples: dict[tuple[str, str, int], list[float]] = {}
            for _ in range(args.repeat):
                for clock, mode in cells:
                    for count in (1, n):
                        with fresh_database("postgresql", work) as url:
                            if scenario == "restart":
                                settings = MigrateSettings(
                                    database_url=url, script_location=str(location)
                                )
                                migrate(settings)
                            seconds, actions = stampede(
                                count, url, location, work, clock=clock, mode=mode
                            )
                        _check(scenario, mode, count, actions)
                        samples.setdefault((clock, mode, count), []).append(seconds)
            ms = {key: median_ms(values) for key, values in samples.items()}
            released = ms["released", "upgrade", n] / ms["released", "upgrade", 1]
            spawned = ms["spawned", "upgrade", n] / ms["spawned", "upgrade", 1]
            baseline = ms["spawned", "off", n] / ms["spawned", "off", 1]
            rows.append(
                [
                    scenario,
                    str(args.revisions),
                    f"{ms['released', 'upgrade', 1]:.0f}",
                    f"{ms['released', 'upgrade', n]:.0f}",
                    f"**{released:.2f}x**",
                    f"{ms['spawned', 'upgrade', 1]:.0f}",
                    f"{ms['spawned', 'upgrade', n]:.0f}",
                    f"{spawned:.2f}x",
                    f"{ms['spawned', 'off', n]:.0f}",
                    f"{baseline:.2f}x",
                    f"{ms['spawned', 'upgrade', n] / ms['spawned', 'off', n]:.2f}x",
                ]
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
            verdict = "met" if released <= 1.5 else "NOT met"
            print(f"{scenario}: {n} vs 1 once imported {released:.2f}x: target 1.5x {verdict}")
    header = [
        "scenario",
        "revisions",
        "released: 1",
        f"released: {n}",
        f"{n} / 1",
        "spawned: 1",
        f"spawned: {n}",
        f"{n} / 1",
        f"spawned, no migration: {n}",
        f"{n} / 1",
        "migrating / not",
    ]
    print(table(header, rows))
    print(
        f"target: {n} processes within 1.5x of 1 once imported (released). From spawn, compare "
        f"the {n} / 1 ratio with and without migration: the difference is what migrating adds."
    )


if __name__ == "__main__":
    main()
