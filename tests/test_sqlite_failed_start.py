"""A failed start on SQLite leaves nothing behind, whatever ``env.py`` the README lists as
working unchanged: Alembic's templates (their own engine, from ``sqlalchemy.url``), the
pytest-alembic convention, an engine of the app's own settings, and ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastapi_migrate import MigrateSettings, MigrationFailed, migrate

from .support import add_revision, table_names, to_async, write_migrations

# pytest-alembic's convention: an Engine expected in config.attributes["connection"].
ENGINE_CONVENTION_ENV = """\
from alembic import context

connectable = context.config.attributes.get("connection", None)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

# The full-stack FastAPI template's shape: its own engine, from the app's own settings.
OWN_ENGINE_ENV = """\
import os

from alembic import context
from sqlalchemy import engine_from_config, pool

section = context.config.get_section(context.config.config_ini_section) or {}
section["sqlalchemy.url"] = os.environ["APP_DB_URL"]
connectable = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
"""

BREAKS = "op.create_table('t2', sa.Column('id', sa.Integer, primary_key=True))\n" + (
    "raise RuntimeError('r2 broke')"
)


@pytest.mark.parametrize("env", ["generic", "async", "engine-convention", "own-engine", "ours"])
def test_a_failed_start_leaves_nothing_behind(
    project: Path, tmp_path: Path, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    template = env if env in ("generic", "async") else "fastapi"
    location = write_migrations(project, 1, env=template)
    if env == "engine-convention":
        (location / "env.py").write_text(ENGINE_CONVENTION_ENV)
    elif env == "own-engine":
        (location / "env.py").write_text(OWN_ENGINE_ENV)
        monkeypatch.setenv("APP_DB_URL", url)
    add_revision(location, "r2", "r1", upgrade=BREAKS)
    monkeypatch.setenv("DATABASE_URL", to_async(url) if env == "async" else url)

    with pytest.raises(MigrationFailed, match="r2 broke"):
        migrate(MigrateSettings())

    assert table_names(url) == set()
