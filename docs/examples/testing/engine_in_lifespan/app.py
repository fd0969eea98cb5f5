from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI, Request

from fastapi_migrate import migrate_on_startup


@asynccontextmanager
async def engine_for_the_app(app: FastAPI) -> AsyncIterator[None]:
    # The URL the migration used: DATABASE_URL, or the test's database inside a test.
    app.state.engine = sa.create_engine(app.state.migration_settings.database_url)
    yield
    app.state.engine.dispose()


app = FastAPI(lifespan=migrate_on_startup(engine_for_the_app))


@app.post("/items/{name}", status_code=201)
def add(name: str, request: Request) -> dict[str, int]:
    with request.app.state.engine.begin() as c:
        row = c.execute(sa.text("INSERT INTO items (name) VALUES (:n) RETURNING id"), {"n": name})
        return {"id": row.scalar_one()}


@app.get("/items")
def items(request: Request) -> list[str]:
    with request.app.state.engine.connect() as c:
        return list(c.execute(sa.text("SELECT name FROM items ORDER BY id")).scalars())
