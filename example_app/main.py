"""A small real FastAPI app whose schema fastapi-migrate keeps up to date.

Run it:  uvicorn example_app.main:app          (SQLite file example.db, no server needed)
         DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/test uvicorn example_app.main:app
Test it: python -m pytest example_app/tests   (each test gets its own migrated database)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from fastapi_migrate import health_router, migrate_on_startup

from .models import Author, Base, Note

# Its sqlalchemy.url (a SQLite file) is the default; DATABASE_URL, read at startup, wins.
ALEMBIC_INI = Path(__file__).parent / "alembic.ini"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's own lifespan: it runs after the migration, so the tables exist, and uses the
    URL the migration used (read when the app starts, so a test can point it elsewhere)."""
    engine = create_async_engine(app.state.migration_settings.database_url)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


app = FastAPI(lifespan=migrate_on_startup(lifespan, metadata=Base.metadata, config=ALEMBIC_INI))
app.include_router(health_router)


class NoteIn(BaseModel):
    author: str
    title: str
    body: str = ""
    pinned: bool = False


class NoteOut(NoteIn):
    id: int


def _sessions() -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = app.state.sessions
    return sessions


@app.post("/notes", status_code=201)
async def create_note(note: NoteIn) -> NoteOut:
    async with _sessions()() as session, session.begin():
        author = await session.scalar(select(Author).where(Author.name == note.author))
        if author is None:
            author = Author(name=note.author)
            session.add(author)
            await session.flush()
        row = Note(author_id=author.id, title=note.title, body=note.body, pinned=note.pinned)
        session.add(row)
        await session.flush()
        return NoteOut(id=row.id, **note.model_dump())


@app.get("/notes")
async def list_notes() -> list[NoteOut]:
    async with _sessions()() as session:
        rows = await session.execute(
            select(Note, Author.name).join(Author).order_by(Note.pinned.desc(), Note.id)
        )
        return [
            NoteOut(id=n.id, author=name, title=n.title, body=n.body, pinned=n.pinned)
            for n, name in rows
        ]


@app.get("/notes/{note_id}")
async def get_note(note_id: int) -> NoteOut:
    async with _sessions()() as session:
        found = (
            await session.execute(select(Note, Author.name).join(Author).where(Note.id == note_id))
        ).first()
        if found is None:
            raise HTTPException(404, "no such note")
        n, name = found
        return NoteOut(id=n.id, author=name, title=n.title, body=n.body, pinned=n.pinned)
