def test_the_seeded_user_is_there(client):
    assert client.get("/users").json() == ["admin@example.com"]


def test_what_a_test_commits_stays_for_the_session(client):
    assert client.post("/users/ada@example.com").status_code == 201
    assert client.get("/users").json() == ["admin@example.com", "ada@example.com"]
