"""SPEC section 3: the decision for every state a database can be in, on all three databases."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate import (
    ConfigurationError,
    MigrateSettings,
    MigrationFailed,
    MigrationResult,
    MultipleHeads,
    UnknownRevision,
    UnversionedDatabase,
    migrate,
)

from .support import (
    MARIADB_SERVER,
    PG_SERVER,
    add_revision,
    current_revisions,
    execute,
    table_names,
    unique_name,
    write_migrations,
)


def _admin(server: str) -> sa.Engine:
    return sa.create_engine(server, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")


@contextmanager
def read_only(backend: str, url: str) -> Iterator[str]:
    """A URL on which any write fails (PostgreSQL, MariaDB); SQLite: the file must not change."""
    parsed = sa.make_url(url)
    if backend == "sqlite":
        path = Path(str(parsed.database))
        before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        yield url
        assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
    elif backend == "postgresql":
        admin = _admin(PG_SERVER)
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"ALTER DATABASE {parsed.database} SET default_transaction_read_only = on"
            )
        try:
            yield url
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"ALTER DATABASE {parsed.database} RESET ALL")
            admin.dispose()
    else:
        user = unique_name("fm_ro")
        admin = _admin(MARIADB_SERVER)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'ro-pw'")
            conn.exec_driver_sql(f"GRANT SELECT ON {parsed.database}.* TO '{user}'@'%%'")
        try:
            yield parsed.set(username=user, password="ro-pw").render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP USER '{user}'@'%%'")
            admin.dispose()


def _rows(url: str, table: str) -> list[tuple[object, ...]]:
    return execute(url, f"SELECT id, name FROM {table} ORDER BY id")[0]


def test_at_head_runs_no_ddl_and_writes_nothing(
    project: Path, database_url: str, backend: str
) -> None:
    write_migrations(project, 3)
    assert migrate(MigrateSettings(database_url=database_url)).action == "upgraded"
    tables = table_names(database_url)

    with read_only(backend, database_url) as url:
        result = migrate(MigrateSettings(database_url=url))

    assert result == MigrationResult("noop", "r3", "r3", [], result.seconds)
    assert 0 <= result.seconds < 60
    assert table_names(database_url) == tables
    assert current_revisions(database_url) == {"r3"}


def test_behind_upgrades_only_the_missing_revisions(project: Path, database_url: str) -> None:
    location = write_migrations(project, 2)
    first = migrate(MigrateSettings(database_url=database_url))
    assert (first.action, first.from_revision, first.to_revision, first.applied) == (
        "upgraded",
        None,
        "r2",
        ["r1", "r2"],
    )
    execute(database_url, "INSERT INTO t1 (id, name) VALUES (1, 'kept')")
    add_revision(location, "r3", "r2", table="t3")
    add_revision(location, "r4", "r3", table="t4")

    result = migrate(MigrateSettings(database_url=database_url))

    assert (result.action, result.from_revision, result.to_revision) == ("upgraded", "r2", "r4")
    assert result.applied == ["r3", "r4"]
    assert result.seconds > 0
    assert {"t1", "t2", "t3", "t4"} <= table_names(database_url)
    assert current_revisions(database_url) == {"r4"}
    assert _rows(database_url, "t1") == [(1, "kept")]


def test_explicit_target_stops_there(project: Path, database_url: str) -> None:
    write_migrations(project, 3)
    result = migrate(MigrateSettings(database_url=database_url, target="r2"))
    assert (result.action, result.to_revision, result.applied) == ("upgraded", "r2", ["r1", "r2"])
    assert current_revisions(database_url) == {"r2"}
    assert "t3" not in table_names(database_url)


def _models() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("authors", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "books",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("author_id", sa.ForeignKey("authors.id")),
    )
    return metadata


def test_empty_database_with_create_all_builds_models_and_stamps_head(
    project: Path, database_url: str
) -> None:
    write_migrations(project, 3)
    settings = MigrateSettings(database_url=database_url, empty_database="create_all")

    result = migrate(settings, metadata=_models())

    assert (result.action, result.from_revision, result.to_revision) == ("created", None, "r3")
    assert result.applied == ["r1", "r2", "r3"]
    # The models' tables, not the revisions' ones: create_all replaced the replay.
    assert table_names(database_url) == {"authors", "books", "alembic_version"}
    assert current_revisions(database_url) == {"r3"}
    assert migrate(settings, metadata=_models()).action == "noop"


def test_create_all_is_not_used_on_a_database_that_has_tables(
    project: Path, database_url: str
) -> None:
    location = write_migrations(project, 1)
    migrate(MigrateSettings(database_url=database_url))
    add_revision(location, "r2", "r1", table="t2")

    result = migrate(
        MigrateSettings(database_url=database_url, empty_database="create_all"), metadata=_models()
    )

    assert (result.action, result.applied) == ("upgraded", ["r2"])
    assert "authors" not in table_names(database_url)


def test_failing_create_all_leaves_nothing_where_ddl_is_transactional(
    project: Path, database_url: str, backend: str
) -> None:
    write_migrations(project, 2)
    metadata = _models()
    # books is created after authors; its hook then fails: authors must not survive.
    sa.event.listen(
        metadata.tables["books"], "after_create", sa.DDL("CREATE TABLE authors (id INTEGER)")
    )

    with pytest.raises(MigrationFailed) as caught:
        migrate(
            MigrateSettings(database_url=database_url, empty_database="create_all"),
            metadata=metadata,
        )

    assert "create_all failed" in str(caught.value)
    assert (caught.value.revision, caught.value.current_revision) == (None, None)
    if backend == "mariadb":  # DDL commits itself there: the message says so
        assert "half-applied" in str(caught.value)
        return
    assert table_names(database_url) == set()


@pytest.mark.parametrize("metadata", [None, sa.MetaData()], ids=["no-metadata", "empty-metadata"])
def test_create_all_without_tables_is_a_configuration_error(
    project: Path, database_url: str, metadata: sa.MetaData | None
) -> None:
    write_migrations(project, 1)
    with pytest.raises(ConfigurationError, match="create_all"):
        migrate(
            MigrateSettings(database_url=database_url, empty_database="create_all"),
            metadata=metadata,
        )
    assert table_names(database_url) == set()


def _legacy(url: str) -> None:
    execute(
        url,
        "CREATE TABLE legacy (id INTEGER PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO legacy (id, name) VALUES (1, 'old row')",
    )


def test_tables_without_version_table_are_refused_and_untouched(
    project: Path, database_url: str
) -> None:
    write_migrations(project, 2)
    _legacy(database_url)

    with pytest.raises(UnversionedDatabase, match="MIGRATE_BASELINE"):
        migrate(MigrateSettings(database_url=database_url))

    assert table_names(database_url) == {"legacy"}
    assert _rows(database_url, "legacy") == [(1, "old row")]


def test_baseline_adopts_an_unversioned_database(project: Path, database_url: str) -> None:
    write_migrations(project, 3)
    _legacy(database_url)

    result = migrate(MigrateSettings(database_url=database_url, baseline="r1"))

    assert (result.action, result.from_revision, result.to_revision) == ("adopted", None, "r3")
    assert result.applied == ["r2", "r3"]
    # r1 was stamped, not run: its table is not created; the rows are kept.
    assert table_names(database_url) == {"legacy", "t2", "t3", "alembic_version"}
    assert _rows(database_url, "legacy") == [(1, "old row")]
    assert current_revisions(database_url) == {"r3"}


def test_unknown_revision_is_an_error_and_ignore_starts_anyway(
    project: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_migrations(project, 2)
    migrate(MigrateSettings(database_url=database_url))
    execute(database_url, "UPDATE alembic_version SET version_num = 'from_newer_code'")

    with pytest.raises(UnknownRevision, match="from_newer_code"):
        migrate(MigrateSettings(database_url=database_url))

    with caplog.at_level(logging.WARNING, logger="fastapi_migrate"):
        result = migrate(MigrateSettings(database_url=database_url, unknown_revision="ignore"))
    assert (result.action, result.from_revision, result.applied) == (
        "noop",
        "from_newer_code",
        [],
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("from_newer_code" in r.getMessage() for r in warnings)
    assert current_revisions(database_url) == {"from_newer_code"}


def test_several_heads_need_target_heads(project: Path, database_url: str) -> None:
    location = write_migrations(project, 1)
    add_revision(location, "left", "r1", table="t_left")
    add_revision(location, "right", "r1", table="t_right")

    with pytest.raises(MultipleHeads, match="heads"):
        migrate(MigrateSettings(database_url=database_url))
    assert table_names(database_url) == set()

    result = migrate(MigrateSettings(database_url=database_url, target="heads"))
    assert result.action == "upgraded"
    assert result.applied[0] == "r1"
    assert sorted(result.applied[1:]) == ["left", "right"]
    assert current_revisions(database_url) == {"left", "right"}
    assert {"t1", "t_left", "t_right"} <= table_names(database_url)
    again = migrate(MigrateSettings(database_url=database_url, target="heads"))
    assert again.action == "noop"
