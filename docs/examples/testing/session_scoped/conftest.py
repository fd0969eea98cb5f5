from collections.abc import Generator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app import app, get_db, init_db


@pytest.fixture(scope="session", autouse=True)
def db(migrated_session_database_url: str) -> Generator[Session, None, None]:
    engine = create_engine(migrated_session_database_url)

    def get_test_db() -> Generator[Session, None, None]:
        with Session(engine) as session:
            yield session

    app.dependency_overrides[get_db] = get_test_db
    with Session(engine) as session:
        init_db(session)  # seeds once for the session, and commits
        yield session
    app.dependency_overrides.clear()
    engine.dispose()


@pytest.fixture(scope="module")
def client() -> Generator[TestClient, None, None]:
    with TestClient(app) as c:  # the lifespan runs on the session's database: a no-op
        yield c
