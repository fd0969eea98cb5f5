import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import app as app_module
from app import app, get_db


@pytest.fixture
def client(migrated_engine, monkeypatch):
    def db_on_the_test_database():
        with Session(migrated_engine) as s:
            yield s

    app.dependency_overrides[get_db] = db_on_the_test_database
    monkeypatch.setattr(app_module, "engine", migrated_engine)  # code that uses it directly
    with TestClient(app) as client:
        yield client
    app.dependency_overrides.clear()
