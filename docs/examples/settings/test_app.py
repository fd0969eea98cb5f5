from fastapi.testclient import TestClient

from main import app


def test_the_app_starts_on_the_test_database(migrated_database_url):
    with TestClient(app):  # neither the app nor env.py touches dev.db
        assert app.state.migration.action == "noop"
