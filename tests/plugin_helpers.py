"""What the tests of the pytest plugin share: a user's project with migrations, and an inner
pytest run on it as the user would run it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support import MARIADB_SERVER, PG_SERVER, add_revision, server_problem, write_migrations

SERVERS = {"postgresql": PG_SERVER, "mariadb": MARIADB_SERVER}
PLUGIN = "fastapi_migrate.pytest_plugin"

SEED_AND_CHILD = """\
op.execute("INSERT INTO t1 (id, name) VALUES (1, 'seed')")
op.create_table(
    'child',
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('parent_id', sa.Integer, sa.ForeignKey('t1.id', name='fk_child_parent')),
    sa.Column('name', sa.String(20)),
)
op.create_index('ix_child_name', 'child', ['name'])"""


def make_user_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with migrations in db/migrations (set by its alembic.ini), a custom version
    table, and a DATABASE_URL that must never be touched."""
    for name in list(os.environ):
        if name.startswith(("MIGRATE_", "PYTEST_XDIST")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    location = write_migrations(root / "db", 3)
    add_revision(location, "r4", "r3", upgrade=SEED_AND_CHILD, downgrade="op.drop_table('child')")
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = db/migrations\nsqlalchemy.url = sqlite:///never-used.db\n"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/never_used")
    monkeypatch.setenv("MIGRATE_VERSION_TABLE", "fm_versions")
    return root


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The inner pytest with only xdist, anyio and this plugin loaded, named as a user would
    with ``-p``: every other installed plugin (hypothesis...) would cost seconds per process."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        return pytester.runpytest_subprocess(
            "-p", "xdist.plugin", "-p", "anyio.pytest_plugin", "-p", PLUGIN, *args
        )


def kept_databases(root: Path, server: str | None) -> set[str]:
    """The kept templates and warm pools of the project in ``root`` (run from there) on
    ``server``, or in its pytest cache folder for SQLite (``None``)."""
    from fastapi_migrate.foundation.settings import MigrateSettings
    from fastapi_migrate.testing.janitor import database_server
    from fastapi_migrate.testing.template_key import template_family

    family = template_family(MigrateSettings(config=root / "alembic.ini", database_url="sqlite://"))
    found = database_server(server, root / ".pytest_cache" / "d" / "fastapi-migrate")
    try:
        return {n for n in found.names() if n.startswith(f"{family}_")}
    finally:
        found.close()


def kept_templates(root: Path, server: str | None) -> set[str]:
    """The kept templates of the project in ``root`` on ``server`` (``kept_databases``)."""
    from fastapi_migrate.testing.pool import is_slot

    return {n for n in kept_databases(root, server) if not is_slot(n)}


def pooled_databases(root: Path, server: str | None) -> set[str]:
    """The warm pool of the project in ``root`` on ``server`` (``kept_databases``)."""
    from fastapi_migrate.testing.pool import is_slot

    return {n for n in kept_databases(root, server) if is_slot(n)}


def drop_kept_templates(root: Path) -> None:
    """Drop what the project in ``root`` kept on the servers: a test's project is gone after it,
    its templates and pools would stay on the server for good."""
    from fastapi_migrate.testing.janitor import database_server

    for url in SERVERS.values():
        if server_problem(url) is not None:
            continue
        server = database_server(url, root)
        try:
            for name in kept_databases(root, url):
                server.drop(name)
        finally:
            server.close()
