from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from models import User

FIRST_SUPERUSER = "admin@example.com"


def seed(connection: Connection) -> None:
    """Called after the migration, under the migration lock, on every start: insert what is
    missing. fastapi-migrate commits when it returns."""
    with Session(connection) as session:
        if session.scalar(select(User).where(User.email == FIRST_SUPERUSER)) is None:
            session.add(User(email=FIRST_SUPERUSER))
            session.flush()
