import os
from collections.abc import Iterator
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.orm import Session

from fastapi_migrate import migrate_on_startup

# Built from the settings at import, as many projects do: it names the developer's database.
engine = sa.create_engine(os.environ.get("APP_DATABASE_URL", "sqlite:///dev.db"))
app = FastAPI(lifespan=migrate_on_startup(database_url=str(engine.url)))


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@app.post("/items/{name}", status_code=201)
def add(name: str, db: Annotated[Session, Depends(get_db)]) -> dict[str, int]:
    row = db.execute(sa.text("INSERT INTO items (name) VALUES (:n) RETURNING id"), {"n": name})
    new_id = row.scalar_one()
    db.commit()
    return {"id": new_id}


@app.get("/items")
def items(db: Annotated[Session, Depends(get_db)]) -> list[str]:
    return list(db.execute(sa.text("SELECT name FROM items ORDER BY id")).scalars())
