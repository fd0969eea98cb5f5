"""``fastapi_migrate.testing``: the checks a project runs in its own suite, on real databases."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate.testing import (
    assert_models_match_migrations,
    assert_single_head,
    assert_upgrade_downgrade_roundtrip,
)
from fastapi_migrate.testing.janitor import database_server

from .conftest import require_backend
from .support import (
    PG_SERVER,
    add_revision,
    current_revisions,
    fresh_database,
    table_names,
    write_migrations,
)


def models(*tables: str, extra_column: str | None = None) -> sa.MetaData:
    """The models write_migrations' revisions build: tables (id, name), maybe one more column."""
    metadata = sa.MetaData()
    for name in tables:
        columns = [sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50))]
        if extra_column and name == extra_column.split(".")[0]:
            columns.append(sa.Column(extra_column.split(".")[1], sa.String(80)))
        sa.Table(name, metadata, *columns)
    return metadata


def test_single_head_returns_it(project: Path) -> None:
    write_migrations(project, 3)
    assert assert_single_head() == "r3"


def test_two_heads_fail_naming_both_and_how_to_merge(project: Path) -> None:
    location = write_migrations(project, 2)
    add_revision(location, "x2", "r1", table="x2")
    with pytest.raises(AssertionError, match=r"2 heads in .*: r2, x2; merge them"):
        assert_single_head()


def test_roundtrip_walks_branches_and_merges_and_ends_at_head(
    project: Path, database_url: str
) -> None:
    location = write_migrations(project, 1)
    add_revision(location, "a1", "r1", table="a1")
    add_revision(location, "b1", "r1", table="b1")
    add_revision(location, "m", ["a1", "b1"], upgrade="pass")
    walked = assert_upgrade_downgrade_roundtrip(url=database_url)
    assert walked[0] == "r1" and walked[-1] == "m" and sorted(walked) == ["a1", "b1", "m", "r1"]
    assert current_revisions(database_url) == {"m"}
    assert {"t1", "a1", "b1"} <= table_names(database_url)


def test_roundtrip_catches_a_downgrade_that_leaves_its_table(
    project: Path, database_url: str
) -> None:
    location = write_migrations(project, 2)
    add_revision(
        location,
        "r3",
        "r2",
        upgrade="op.create_table('t3', sa.Column('id', sa.Integer, primary_key=True))",
        downgrade="pass",
    )
    with pytest.raises(AssertionError, match=r"upgrade again to revision r3 \(3 of 3, .*t3"):
        assert_upgrade_downgrade_roundtrip(url=database_url)


def test_models_matching_the_migrations_pass(project: Path, database_url: str) -> None:
    write_migrations(project, 3)
    assert_models_match_migrations(models("t1", "t2", "t3"), url=database_url)
    assert current_revisions(database_url) == {"r3"}


def test_models_are_compared_at_every_head_of_a_branched_history(
    project: Path, database_url: str, backend: str, tmp_path: Path
) -> None:
    location = write_migrations(project, 1)
    add_revision(location, "a2", "r1", table="a2")
    add_revision(location, "b2", "r1", table="b2")

    assert_models_match_migrations(models("t1", "a2", "b2"), url=database_url)

    assert current_revisions(database_url) == {"a2", "b2"}
    missing = "table b2: in the database, not in the models"
    with fresh_database(backend, tmp_path) as other, pytest.raises(AssertionError, match=missing):
        assert_models_match_migrations(models("t1", "a2"), url=other)


def test_models_that_differ_list_every_difference(project: Path, database_url: str) -> None:
    write_migrations(project, 3)
    metadata = models("t1", "t2", "t9", extra_column="t2.email")
    with pytest.raises(AssertionError) as failure:
        assert_models_match_migrations(metadata, url=database_url)
    message = str(failure.value)
    assert "3 difference(s)" in message
    assert "table t9: in the models, missing from the database" in message
    assert "table t3: in the database, not in the models" in message
    assert "column t2.email: in the models, missing from the database" in message
    assert "--autogenerate" in message


def test_models_are_compared_with_what_migrations_build_even_under_create_all(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app that create_all's empty databases must still have migrations for its models."""
    write_migrations(project, 2)
    monkeypatch.setenv("MIGRATE_EMPTY_DATABASE", "create_all")
    with pytest.raises(AssertionError, match=r"column t1\.email"):
        assert_models_match_migrations(models("t1", "t2", extra_column="t1.email"))


def test_defaults_read_the_environment_and_use_a_scratch_sqlite_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_migrations(project, 2)
    module = f"models_{uuid.uuid4().hex[:8]}"
    (project / f"{module}.py").write_text(
        "import sqlalchemy as sa\nmetadata = sa.MetaData()\n"
        "for name in ('t1', 't2'):\n"
        "    sa.Table(name, metadata, sa.Column('id', sa.Integer, primary_key=True),"
        " sa.Column('name', sa.String(50)))\n"
    )
    monkeypatch.setenv("MIGRATE_METADATA", f"{module}:metadata")
    monkeypatch.setenv("MIGRATE_VERSION_TABLE", "schema_versions")
    assert_models_match_migrations()
    assert assert_upgrade_downgrade_roundtrip() == ["r1", "r2"]


def test_scratch_databases_on_a_server_are_dropped(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    require_backend("postgresql")
    write_migrations(project, 2)
    monkeypatch.setenv("MIGRATE_TEST_DATABASE_URL", PG_SERVER)
    server = database_server(PG_SERVER, tmp_path)
    mine = f"_{os.getpid()}_"
    try:
        with pytest.raises(AssertionError, match=r"column t1\.email"):
            assert_models_match_migrations(models("t1", "t2", extra_column="t1.email"))
        assert assert_upgrade_downgrade_roundtrip() == ["r1", "r2"]
        assert [name for name in server.names() if mine in name] == []
    finally:
        server.close()
