"""The example app's own tests: each starts on an empty database at head."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize("author", ["ada", "grace", "linus"])
def test_each_test_starts_with_no_notes(client: TestClient, author: str) -> None:
    assert client.get("/notes").json() == []
    created = client.post("/notes", json={"author": author, "title": "hello"})
    assert created.status_code == 201
    assert [n["author"] for n in client.get("/notes").json()] == [author]


def test_pinned_notes_come_first(client: TestClient) -> None:
    client.post("/notes", json={"author": "ada", "title": "later"})
    client.post("/notes", json={"author": "ada", "title": "first", "pinned": True})
    assert [n["title"] for n in client.get("/notes").json()] == ["first", "later"]


def test_health_is_ok_at_head(client: TestClient) -> None:
    response = client.get("/health/migrations")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
