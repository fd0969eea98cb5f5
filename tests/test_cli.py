"""``fastapi-migrate`` against real databases, as a release job and a CI pipeline run it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .cli_helpers import cli, ok
from .progress_helpers import summary_line
from .support import current_revisions, subprocess_env, table_names, to_async, write_migrations


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_release_job_commands(project: Path, database_url: str, driver: str) -> None:
    """current, upgrade [--sql], check, downgrade [--sql], stamp, through a sync driver (the
    connection handed to env.py) and an async one, with the app's MIGRATE_MODE=wait set."""
    write_migrations(project, 3)
    url = to_async(database_url) if driver == "async" else database_url
    env = subprocess_env(DATABASE_URL=url, MIGRATE_MODE="wait")

    def unchanged(tables: set[str], revisions: set[str]) -> None:
        assert table_names(database_url) == tables
        assert current_revisions(database_url) == revisions

    # `current` on an empty database says so and creates nothing (alembic #694).
    assert ok(cli(project, "current", env=env)).stdout.strip() == "base (empty database)"
    unchanged(set(), set())

    # --sql from an empty database: every revision's SQL, nothing touched.
    sql = ok(cli(project, "upgrade", "--sql", env=env)).stdout
    assert all(f"CREATE TABLE t{k}" in sql for k in (1, 2, 3)), sql
    unchanged(set(), set())

    out = ok(cli(project, "upgrade", "r2", env=env)).stdout
    summary = summary_line(out)
    assert summary.startswith("migration upgraded: from base to r2, applied 2 [r1,r2] in "), out
    unchanged({"alembic_version", "t1", "t2"}, {"r2"})

    result = cli(project, "check", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the database is at r2, not at head (r3): 1 migration(s) pending (r3)" in result.stdout

    # --sql now starts from the database's revision.
    sql = ok(cli(project, "upgrade", "--sql", env=env)).stdout
    assert "CREATE TABLE t3" in sql and "CREATE TABLE t1" not in sql, sql
    unchanged({"alembic_version", "t1", "t2"}, {"r2"})

    out = ok(cli(project, "upgrade", env=env)).stdout
    assert summary_line(out).startswith("migration upgraded: from r2 to r3, applied 1 [r3]"), out
    assert ok(cli(project, "check", env=env)).stdout.startswith("ok: the database is at head (r3)")
    assert ok(cli(project, "current", env=env)).stdout.strip() == "r3 (head)"

    sql = ok(cli(project, "downgrade", "r1", "--sql", env=env)).stdout
    assert "DROP TABLE t3" in sql and "DROP TABLE t2" in sql and "DROP TABLE t1" not in sql, sql
    unchanged({"alembic_version", "t1", "t2", "t3"}, {"r3"})

    out = ok(cli(project, "downgrade", "r1", env=env)).stdout
    assert out.startswith("downgraded: from r3 to r1 in "), out
    unchanged({"alembic_version", "t1"}, {"r1"})

    out = ok(cli(project, "stamp", "head", env=env)).stdout
    assert out.startswith("stamped: from r1 to r3 in "), out
    unchanged({"alembic_version", "t1"}, {"r3"})


MODELS = """\
import sqlalchemy as sa

metadata = sa.MetaData()
for name in ("t1", "t2"):
    sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50)),
        *([sa.Column("email", sa.String(100))] if name == "t2" else []),
    )
"""


def test_check_compares_models_and_autogenerate_fixes_them(
    project: Path, database_url: str
) -> None:
    """A model gains a column: check fails naming it, --autogenerate writes the revision,
    upgrade applies it, check passes."""
    location = write_migrations(project, 2)
    (project / "models.py").write_text(textwrap.dedent(MODELS))
    env = subprocess_env(DATABASE_URL=database_url)
    ok(cli(project, "upgrade", env=env))

    result = cli(project, "--metadata", "models:metadata", "check", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip() == (
        "- the models differ from the database: column t2.email: in the models, "
        "missing from the database"
    )
    assert "check failed: 1 problem(s)" in result.stderr

    env["MIGRATE_METADATA"] = "models:metadata"
    ok(cli(project, "revision", "--autogenerate", "-m", "add email", "--rev-id", "r3", env=env))
    written = (location / "versions" / "r3_add_email.py").read_text()
    # SQLite gets batch mode: ``with op.batch_alter_table('t2') as batch_op: batch_op.add_column``
    assert "add_column(" in written and "sa.Column('email', sa.String(length=100)" in written
    assert ("batch_alter_table('t2'" in written) == database_url.startswith("sqlite"), written
    assert "down_revision: str | Sequence[str] | None = 'r2'" in written
    assert current_revisions(database_url) == {"r2"}  # autogenerate only reads

    out = ok(cli(project, "upgrade", env=env)).stdout
    assert summary_line(out).startswith("migration upgraded: from r2 to r3, applied 1 [r3]"), out
    out = ok(cli(project, "check", env=env)).stdout
    assert out.strip() == "ok: the database is at head (r3); the models match it (2 tables)"
