from alembic import context
from sqlalchemy import create_engine

from models import Base
from settings import settings

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # The connection fastapi-migrate opened on the database it was asked for (the app's start,
    # the command line, a test's database); the app's own engine only for plain `alembic`.
    connectable = config.attributes.get("connection") or create_engine(
        settings.SQLALCHEMY_DATABASE_URI
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
