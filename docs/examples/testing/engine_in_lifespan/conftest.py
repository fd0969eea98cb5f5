import pytest
from fastapi.testclient import TestClient

from app import app


@pytest.fixture
def client(migrated_database_url):  # nothing more: the lifespan builds the engine on it
    with TestClient(app) as client:
        yield client
