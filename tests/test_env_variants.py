"""Whatever ``env.py`` a project has: ours, Alembic's stock ones, sync and async URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import MigrateSettings, MigrationFailed, migrate

from .support import (
    add_revision,
    current_revisions,
    execute,
    table_names,
    to_async,
    write_migrations,
)


@pytest.mark.parametrize("env", ["generic", "async"])
def test_stock_env_takes_the_url_from_database_url_not_alembic_ini(
    project: Path, database_url: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_migrations(project, 2, env=env)
    ini = (project / "alembic.ini").read_text()
    assert "sqlalchemy.url = driver://user:pass@localhost/dbname" in ini  # alembic init's
    monkeypatch.setenv("DATABASE_URL", database_url if env == "generic" else to_async(database_url))

    result = migrate(MigrateSettings())

    assert (result.action, result.applied) == ("upgraded", ["r1", "r2"])
    assert current_revisions(database_url) == {"r2"}
    assert {"t1", "t2"} <= table_names(database_url)
    assert migrate(MigrateSettings()).action == "noop"


def test_our_env_runs_async_urls(project: Path, database_url: str) -> None:
    location = write_migrations(project, 2)
    settings = MigrateSettings(database_url=to_async(database_url))
    assert migrate(settings).applied == ["r1", "r2"]
    add_revision(location, "r3", "r2", table="t3")

    result = migrate(settings)

    assert (result.action, result.from_revision, result.applied) == ("upgraded", "r2", ["r3"])
    assert current_revisions(database_url) == {"r3"}
    assert migrate(settings).action == "noop"


def test_revision_failing_half_way_is_named_and_rolled_back(
    project: Path, database_url: str, backend: str
) -> None:
    location = write_migrations(project, 1)
    migrate(MigrateSettings(database_url=database_url))
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=(
            "op.create_table('t2', sa.Column('id', sa.Integer, primary_key=True))\n"
            "op.execute(\"INSERT INTO t1 (id, name) VALUES (5, 'half')\")\n"
            "raise RuntimeError('r2 broke half-way')"
        ),
    )
    add_revision(location, "r3", "r2", table="t3")

    with pytest.raises(MigrationFailed) as caught:
        migrate(MigrateSettings(database_url=database_url))

    error = caught.value
    assert (error.revision, error.current_revision) == ("r2", "r1")
    assert "revision r2 failed" in str(error)
    assert "r2 broke half-way" in str(error)
    assert "left at r1" in str(error)
    assert current_revisions(database_url) == {"r1"}
    assert "t3" not in table_names(database_url)
    if backend == "mariadb":  # DDL commits itself: the message tells what to check
        assert "half-applied" in str(error)
        return
    # SQLite too: our env.py emits BEGIN, so its DDL is transactional.
    assert "t2" not in table_names(database_url)
    assert execute(database_url, "SELECT count(*) FROM t1")[0] == [(0,)]


def test_batch_alter_table_rebuilds_a_table_and_keeps_its_rows(
    project: Path, database_url: str
) -> None:
    location = write_migrations(project, 0)
    add_revision(
        location,
        "r1",
        None,
        upgrade=(
            "op.create_table('people', sa.Column('id', sa.Integer, primary_key=True),\n"
            "    sa.Column('name', sa.String(20)), sa.Column('legacy', sa.String(20)))\n"
            "op.execute(\"INSERT INTO people (id, name, legacy) VALUES (1, 'ada', 'x')\")"
        ),
    )
    add_revision(
        location,
        "r2",
        "r1",
        upgrade=(
            "with op.batch_alter_table('people') as batch:\n"
            "    batch.alter_column('name', existing_type=sa.String(20), type_=sa.String(200),\n"
            "                       nullable=False)\n"
            "    batch.drop_column('legacy')\n"
            "    batch.add_column(sa.Column('email', sa.String(100)))"
        ),
    )

    result = migrate(MigrateSettings(database_url=database_url))

    assert result.applied == ["r1", "r2"]
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            columns = {c["name"]: c for c in sa.inspect(conn).get_columns("people")}
    finally:
        engine.dispose()
    assert set(columns) == {"id", "name", "email"}
    assert columns["name"]["nullable"] is False
    assert columns["name"]["type"].length == 200
    assert execute(database_url, "SELECT id, name, email FROM people") == [[(1, "ada", None)]]
    assert "_alembic_tmp_people" not in table_names(database_url)
