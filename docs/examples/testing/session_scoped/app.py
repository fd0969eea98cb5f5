import os
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from fastapi_migrate import migrate_on_startup
from models import User

engine = create_engine(os.environ.get("SQLALCHEMY_DATABASE_URI", "sqlite:///dev.db"))
app = FastAPI(lifespan=migrate_on_startup(database_url=str(engine.url)))


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


def init_db(session: Session) -> None:
    if session.scalar(select(User).where(User.email == "admin@example.com")) is None:
        session.add(User(email="admin@example.com"))
        session.commit()


@app.post("/users/{email}", status_code=201)
def add_user(email: str, db: Annotated[Session, Depends(get_db)]) -> None:
    db.add(User(email=email))
    db.commit()


@app.get("/users")
def users(db: Annotated[Session, Depends(get_db)]) -> list[str]:
    return list(db.scalars(select(User.email).order_by(User.id)))
