from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from fastapi_migrate import health_router, migrate_on_startup
from models import Note


@asynccontextmanager
async def engine(app: FastAPI) -> AsyncIterator[None]:
    # Runs once the database is at head, with the URL the migration used.
    app.state.engine = create_engine(app.state.migration_settings.database_url)
    yield
    app.state.engine.dispose()


app = FastAPI(lifespan=migrate_on_startup(engine))
app.include_router(health_router)  # GET /health/migrations, for a readiness probe


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@app.post("/notes", status_code=201)
def add_note(text: str, session: SessionDep) -> dict[str, int]:
    note = Note(text=text)
    session.add(note)
    session.commit()
    return {"id": note.id}


@app.get("/notes")
def list_notes(session: SessionDep) -> list[str]:
    return list(session.scalars(select(Note.text).order_by(Note.id)))
