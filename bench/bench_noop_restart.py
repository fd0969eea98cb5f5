"""No-op restart: the database is already at head, as on most restarts.

One call per fresh process, imports excluded (each child imports everything, then times only
the call), at 50, 200 and 1000 revisions, with and without bytecode caching, for three kinds of
history: ``plain`` (as ``alembic revision`` writes them), ``dotted`` (ids such as ``v12.0.0.a``)
and ``dynamic`` (every tenth file has code the text reader cannot vouch for: ``__import__``,
``globals()``, ``import *``; its heads are cached once Alembic has loaded it). Headline:

- ``lifespan``: ``migrate_on_startup()`` entered as uvicorn does, in a fresh process: settings
  read from the environment, the worker-thread hop, ``migrate()``; against
- ``engine``: a fresh engine, ``SELECT version_num``, dispose: the floor;

and beside them:

- ``migrate()``: ``fastapi_migrate.migrate(settings)``, the ``MigrateSettings`` built before
  (as the ``Config`` of ``alembic``);
- ``lifespan``: ``migrate_on_startup()`` entered as uvicorn does: settings read from the
  environment, the worker-thread hop, ``migrate()``;
- ``migrate(), no cache``: the same with the cache unwritable (``migrations/__pycache__`` is a
  file, as on a read-only code folder): the heads are read from the files' text each time;
- ``alembic``: ``alembic.command.upgrade(cfg, "head")``.

Run: ``python bench/bench_noop_restart.py [--repeat 9] [--sizes 50,200,1000] [--histories
plain,dotted,dynamic] [--backend sqlite|postgresql]``. Every revision folder is older than two
seconds before the first start, as after a deploy: fastapi-migrate caches nothing for files
changed within the last two seconds (see fastapi_migrate/glue/heads.py). The timed starts are
the second and later after the migration (the first no-op start may write the cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    revision_id,
    run_child,
    table,
    write_history,
)

HISTORIES = ("plain", "dotted", "dynamic")
# Lines the text reader doubts, as found in real histories; one per tenth file.
_DYNAMIC = (
    "sa_again = __import__('sqlalchemy')\n",
    "globals()['HELPER'] = 'app.helpers'\n",
    "from os.path import *  # helpers imported from the app\n",
)


def shape(location: Path, size: int, history: str) -> None:
    """Turn the plain history into a dotted or a dynamic one, in place."""
    if history == "plain":
        return
    for k in range(1, size + 1):
        path = next((location / "versions").glob(f"{revision_id(k)}_*.py"))
        text = path.read_text()
        if history == "dotted":
            for j in (k, k - 1):
                if j:
                    text = text.replace(revision_id(j), f"v{j}.0.0.a")
        elif k % 10 == 0:
            text = _DYNAMIC[k // 10 % len(_DYNAMIC)] + text
        path.write_text(text)


CHILD = """
import asyncio, json, sys, time
kind, url, location = sys.argv[1:4]
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql, sqlalchemy.dialects.sqlite
import alembic.runtime.migration, alembic.ddl.postgresql, alembic.ddl.sqlite
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi_migrate import MigrateSettings, migrate, migrate_on_startup
import anyio._backends._asyncio  # imported lazily by the first to_thread call
sa.make_url(url).get_dialect().import_dbapi()

def engine():
    e = sa.create_engine(url)
    with e.connect() as conn:
        found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    e.dispose()
    return found

settings = MigrateSettings(database_url=url, script_location=location)

def plugin():
    return migrate(settings).action

cfg = Config()
cfg.set_main_option("script_location", location)
cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

def alembic_upgrade():
    command.upgrade(cfg, "head")
    return "done"

if kind == "lifespan":
    app = FastAPI(lifespan=migrate_on_startup(database_url=url, script_location=location))
    async def main():
        started = time.perf_counter()
        async with app.router.lifespan_context(app):
            return time.perf_counter() - started, app.state.migration.action
    seconds, outcome = asyncio.run(main())
else:
    call = {"engine": engine, "plugin": plugin, "alembic": alembic_upgrade}[kind]
    started = time.perf_counter()
    outcome = call()
    seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "outcome": outcome}))
"""

KINDS = ["lifespan", "engine", "plugin", "nocache", "alembic"]
LABELS = {
    "lifespan": "lifespan (fresh process)",
    "engine": "engine + SELECT",
    "plugin": "migrate()",
    "nocache": "migrate(), no cache",
    "alembic": "alembic upgrade",
}


def measure(kind: str, url: str, location: Path, env: dict[str, str]) -> float:
    kind_arg = "plugin" if kind == "nocache" else kind
    out = json.loads(run_child(CHILD, [kind_arg, url, str(location)], env, location.parent))
    expected = {"engine": None, "alembic": "done"}.get(kind_arg, "noop")
    if expected is not None and out["outcome"] != expected:
        raise RuntimeError(f"{kind}: expected {expected}, got {out['outcome']}")
    return float(out["seconds"])


def bench_size(
    size: int, history_kind: str, backend: str, repeat: int, work: Path
) -> list[list[str]]:
    rows = []
    root = work / f"{history_kind}{size}"
    root.mkdir()
    history = write_history(root / "src", size)
    shape(history, size, history_kind)
    folders = {}
    for variant in ("bytecode", "nobytecode", "nocache"):
        folders[variant] = root / variant / "migrations"
        shutil.copytree(history, folders[variant])
    (folders["nocache"] / "__pycache__").write_text("a file: nothing is written")
    time.sleep(2.1)  # files older than the cache's 2-second racy window, as after a deploy
    with fresh_database(backend, root) as url:
        envs = {
            "bytecode": child_env(),
            "nobytecode": child_env(PYTHONDONTWRITEBYTECODE="1"),
        }
        # First start migrates; one more start per folder writes the cache (and .pyc files).
        bytecode = folders["bytecode"]
        run_child(CHILD, ["plugin", url, str(bytecode)], envs["bytecode"], bytecode.parent)
        for variant, env in envs.items():
            for kind in ("plugin", "alembic"):
                measure(kind, url, folders[variant], env)
        # Loading the scripts wrote versions/__pycache__ (.pyc): the folder changed, and the
        # cache waits until it is two seconds old, as the starts after a deploy's first do.
        time.sleep(2.1)
        for variant, env in envs.items():
            measure("plugin", url, folders[variant], env)
        for variant, env in envs.items():
            samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for _ in range(repeat):
                for kind in KINDS:
                    folder = folders["nocache" if kind == "nocache" else variant]
                    samples[kind].append(measure(kind, url, folder, env))
            ms = {kind: median_ms(values) for kind, values in samples.items()}
            floor = ms["engine"]
            rows.append(
                [
                    history_kind,
                    str(size),
                    "yes" if variant == "bytecode" else "no",
                    f"{ms['lifespan'] / floor:.2f}x",
                    *(f"{ms[kind]:.1f}" for kind in KINDS),
                    f"{ms['plugin'] / floor:.2f}x",
                    f"{ms['nocache'] / floor:.2f}x",
                    f"{ms['alembic'] / ms['plugin']:.1f}x",
                    f"{ms['alembic'] / ms['lifespan']:.1f}x",
                ]
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--histories", default=",".join(HISTORIES))
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"no-op restart on {args.backend}, median of {args.repeat} fresh processes per cell, "
        "imports excluded; ms"
    )
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="fm-bench-noop-") as work:
        for history_kind in args.histories.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                rows += bench_size(size, history_kind, args.backend, args.repeat, Path(work))
    header = [
        "history",
        "revisions",
        ".pyc",
        "lifespan / engine",
        *(LABELS[kind] for kind in KINDS),
        "migrate() / engine",
        "no cache / engine",
        "alembic / migrate()",
        "alembic / lifespan",
    ]
    print(table(header, rows))
    print(verdicts(rows))


# The targets: the lifespan in a fresh process over the floor, for every history, from the
# second start; alembic's no-op over ours, by revisions.
FASTER = {200: 4.0, 1000: 15.0}
FLOOR = 1.5


def verdicts(rows: list[list[str]]) -> str:
    """One line per row: the targets, met or not."""
    lines = []
    for row in rows:
        history, size, pyc = row[0], int(row[1]), row[2]
        lifespan = float(row[3].rstrip("x"))
        faster = float(row[-2].rstrip("x"))
        line = f"{history}, {size} revisions, .pyc {pyc}: lifespan / engine {lifespan:.2f}x "
        line += f"(target <= {FLOOR}x: {'met' if lifespan <= FLOOR else 'NOT met'})"
        if size in FASTER:
            ok = faster >= FASTER[size]
            line += f"; alembic / migrate() {faster:.1f}x (target >= {FASTER[size]:g}x: "
            line += f"{'met' if ok else 'NOT met'})"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
