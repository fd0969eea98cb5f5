"""``fastapi_migrate.testing`` against pytest-alembic's checks: an empty history, revisions
irreversible on purpose, and downgrades that leave something behind; on real databases."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fastapi_migrate.testing import (
    assert_downgrade_leaves_no_trace,
    assert_single_head,
    assert_upgrade_downgrade_roundtrip,
)

from .support import (
    add_revision,
    current_revisions,
    fresh_database,
    table_names,
    write_migrations,
)

_IRREVERSIBLE = "raise NotImplementedError('the old prices are gone')"


def create(table: str) -> str:
    return f"op.create_table({table!r}, sa.Column('id', sa.Integer, primary_key=True))"


def test_single_head_passes_on_an_empty_history(project: Path) -> None:
    write_migrations(project, 0)
    assert assert_single_head() is None


def test_roundtrip_goes_up_through_an_irreversible_revision_but_not_down_past_it(
    project: Path,
    database_url: str,
    backend: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    location = write_migrations(project, 1)
    add_revision(location, "r2", "r1", upgrade=create("t2"), downgrade=_IRREVERSIBLE)
    add_revision(location, "r3", "r2", table="t3")
    add_revision(location, "r4", "r3", table="t4")

    with fresh_database(backend, tmp_path) as other_url, pytest.raises(AssertionError) as caught:
        assert_upgrade_downgrade_roundtrip(url=other_url)
    assert "downgrade from revision r2 (2 of 4" in str(caught.value)
    assert "the old prices are gone" in str(caught.value)
    assert "irreversible=['r2']" in str(caught.value)

    caplog.set_level(logging.INFO, logger="fastapi_migrate")
    walked = assert_upgrade_downgrade_roundtrip(url=database_url, irreversible=["r2"])

    assert walked == ["r1", "r2", "r3", "r4"]
    assert current_revisions(database_url) == {"r4"}
    assert {"t1", "t2", "t3", "t4"} <= table_names(database_url)
    assert "revision r2 is irreversible" in caplog.text
    assert "not downgraded" in caplog.text


def test_irreversible_names_a_revision_of_the_history(project: Path, database_url: str) -> None:
    write_migrations(project, 2)
    with pytest.raises(AssertionError, match=r"irreversible: 'nope' is not a revision"):
        assert_upgrade_downgrade_roundtrip(url=database_url, irreversible=["nope"])


def test_a_downgrade_that_renames_instead_of_dropping_is_named(
    project: Path, database_url: str, backend: str, tmp_path: Path
) -> None:
    location = write_migrations(project, 2)
    add_revision(
        location, "r3", "r2", upgrade=create("t3"), downgrade="op.rename_table('t3', 't3_old')"
    )
    add_revision(location, "r4", "r3", table="t4")
    # The round trip cannot see it: upgrading again creates t3 beside t3_old.
    with fresh_database(backend, tmp_path) as other_url:
        assert assert_upgrade_downgrade_roundtrip(url=other_url) == ["r1", "r2", "r3", "r4"]

    with pytest.raises(AssertionError) as caught:
        assert_downgrade_leaves_no_trace(url=database_url)

    message = str(caught.value)
    assert "the downgrade of revision r3 (3 of 4" in message
    assert "table t3_old: left behind" in message
    assert "column t3_old.id: left behind" in message
    assert "table t1" not in message


def test_a_downgrade_that_forgets_an_index_is_named(project: Path, database_url: str) -> None:
    location = write_migrations(project, 1)
    add_revision(
        location,
        "r2",
        "r1",
        upgrade="op.create_index('ix_t1_name', 't1', ['name'])",
        downgrade="pass",
    )
    with pytest.raises(AssertionError, match=r"revision r2 .*\n  - index ix_t1_name on t1: left"):
        assert_downgrade_leaves_no_trace(url=database_url)


def test_clean_downgrades_branches_and_merges_pass(project: Path, database_url: str) -> None:
    location = write_migrations(project, 1)
    add_revision(location, "a1", "r1", table="a1")
    add_revision(location, "b1", "r1", table="b1")
    add_revision(location, "m", ["a1", "b1"], upgrade="pass")
    add_revision(
        location,
        "r5",
        "m",
        upgrade="op.add_column('t1', sa.Column('email', sa.String(80)))\n"
        "op.create_index('ix_t1_email', 't1', ['email'], unique=True)",
        downgrade="op.drop_index('ix_t1_email', 't1')\nop.drop_column('t1', 'email')",
    )
    add_revision(location, "r6", "r5", upgrade=create("t6"), downgrade=_IRREVERSIBLE)

    checked = assert_downgrade_leaves_no_trace(url=database_url, irreversible=["r6"])

    assert sorted(checked) == ["a1", "b1", "m", "r1", "r5"]
    assert current_revisions(database_url) == {"r6"}
