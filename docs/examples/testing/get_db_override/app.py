from collections.abc import Iterator
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.orm import Session

from fastapi_migrate import migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())


def get_db() -> Iterator[Session]:
    raise RuntimeError("the real app opens a session on its own engine here")


@app.post("/items/{name}", status_code=201)
def add(name: str, db: Annotated[Session, Depends(get_db)]) -> dict[str, int]:
    row = db.execute(sa.text("INSERT INTO items (name) VALUES (:n) RETURNING id"), {"n": name})
    new_id = row.scalar_one()
    db.commit()
    return {"id": new_id}


@app.get("/items")
def items(db: Annotated[Session, Depends(get_db)]) -> list[str]:
    return list(db.execute(sa.text("SELECT name FROM items ORDER BY id")).scalars())
