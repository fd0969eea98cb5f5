from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import User


def test_signup(migrated_connection):  # inside a transaction rolled back after the test
    with Session(bind=migrated_connection, join_transaction_mode="create_savepoint") as session:
        session.add(User(email="a@example.com"))
        session.commit()  # a savepoint: rolled back after the test
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_the_next_test_sees_none_of_it(migrated_connection):
    with Session(bind=migrated_connection) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
