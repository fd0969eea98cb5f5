import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import app, get_db


@pytest.fixture
def client(migrated_connection):
    def db_on_the_test_connection():
        with Session(bind=migrated_connection, join_transaction_mode="create_savepoint") as s:
            yield s

    app.dependency_overrides[get_db] = db_on_the_test_connection
    with TestClient(app) as client:  # the lifespan runs on the test's database: a no-op
        yield client
    app.dependency_overrides.clear()
