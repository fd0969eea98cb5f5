"""GET /health/migrations: our probe vs the naive one that reads the script folder per request.

Both answer the same question on the same PostgreSQL database through the same TestClient, on
one kept, pre-pinged connection; the naive route also loads the revision graph (as
``ScriptDirectory.from_config(...).get_heads()`` does) on each request. Prints the median
milliseconds per request for each and the ratio, measured side by side in one run.

    python -m bench.bench_health [REVISIONS] [REQUESTS]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastapi_migrate import MigrateSettings, health_router, migrate, migrate_on_startup  # noqa: E402
from tests.support import fresh_database, write_migrations  # noqa: E402


def naive_app(url: str, location: Path) -> FastAPI:
    app = FastAPI()
    engine = sa.create_engine(url, pool_size=1, pool_pre_ping=True)  # as our probe's

    @app.get("/health/migrations")
    def health() -> JSONResponse:
        cfg = Config()
        cfg.set_main_option("script_location", str(location))
        heads = set(ScriptDirectory.from_config(cfg).get_heads())
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        return JSONResponse({"ok": current == heads}, status_code=200 if current == heads else 503)

    return app


def per_request_ms(client: TestClient, requests: int) -> float:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        assert client.get("/health/migrations").status_code == 200
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(revisions: int = 200, requests: int = 100) -> None:
    with tempfile.TemporaryDirectory() as tmp, fresh_database("postgresql", Path(tmp)) as url:
        root = Path(tmp)
        location = write_migrations(root, revisions)
        os.chdir(root)
        migrate(MigrateSettings(database_url=url))
        ours = FastAPI(lifespan=migrate_on_startup(database_url=url))
        ours.include_router(health_router)
        results: dict[str, list[float]] = {"ours": [], "naive": []}
        apps: dict[str, Any] = {"ours": ours, "naive": naive_app(url, location)}
        with TestClient(apps["ours"]) as a, TestClient(apps["naive"]) as b:
            clients = {"ours": a, "naive": b}
            for _ in range(3):  # interleaved rounds: the machine's noise hits both alike
                for name, client in clients.items():
                    results[name].append(per_request_ms(client, requests))
        ours_ms = statistics.median(results["ours"])
        naive_ms = statistics.median(results["naive"])
        print(f"{revisions} revisions, {requests} requests x 3 rounds, PostgreSQL")
        print(f"  ours : {ours_ms:7.2f} ms/request")
        print(f"  naive: {naive_ms:7.2f} ms/request (script folder read per request)")
        print(f"  naive / ours = {naive_ms / ours_ms:.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
