from fastapi.testclient import TestClient

from main import app


def test_a_note_is_kept(migrated_database_url):
    # A database of this test's own, at head: the app's startup migration has nothing to do.
    with TestClient(app) as client:
        assert app.state.migration.action == "noop"
        assert client.post("/notes", params={"text": "buy milk"}).status_code == 201
        assert client.get("/notes").json() == ["buy milk"]


def test_each_test_starts_empty(migrated_database_url):
    with TestClient(app) as client:
        assert client.get("/notes").json() == []
