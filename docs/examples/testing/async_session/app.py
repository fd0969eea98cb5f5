from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fastapi_migrate import migrate_on_startup


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


app = FastAPI(lifespan=migrate_on_startup())


async def get_session() -> AsyncIterator[AsyncSession]:
    raise RuntimeError("the real app opens a session on its own async engine here")
    yield


@app.post("/items/{name}", status_code=201)
async def add(name: str, session: Annotated[AsyncSession, Depends(get_session)]) -> dict[str, int]:
    item = Item(name=name)
    session.add(item)
    await session.commit()
    return {"id": item.id}  # read after the commit: needs expire_on_commit=False


@app.get("/items")
async def items(session: Annotated[AsyncSession, Depends(get_session)]) -> list[str]:
    return list((await session.scalars(select(Item.name).order_by(Item.id))).all())
