"""Alembic environment written by ``fastapi-migrate init``; it needs no editing.

The URL, the metadata and the version table come from fastapi-migrate's settings
(DATABASE_URL, MIGRATE_METADATA...). Options for ``context.configure`` (``include_object``,
``compare_server_default``...) can be passed to ``run_migrations``.
"""

from fastapi_migrate.alembic_env import run_migrations

run_migrations()
