from sqlalchemy import text


def test_signup(migrated_engine):  # a database of this test's own, at head
    with migrated_engine.begin() as conn:
        conn.execute(text("INSERT INTO users (email) VALUES ('a@example.com')"))
        assert conn.execute(text("SELECT count(*) FROM users")).scalar_one() == 1
