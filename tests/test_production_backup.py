"""MIGRATE_BACKUP_DIR on SQLite: an online backup before DDL, and only then."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fastapi_migrate import ConfigurationError, MigrateSettings, migrate

from .support import (
    add_revision,
    current_revisions,
    execute,
    table_names,
    to_async,
    write_migrations,
)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_backup_is_taken_before_ddl_only_and_restores_the_rows(
    project: Path, tmp_path: Path, driver: str
) -> None:
    location = write_migrations(project, 2)
    database = tmp_path / "app.sqlite"
    url = f"sqlite:///{database}"
    backups = tmp_path / "backups"
    settings = MigrateSettings(
        database_url=to_async(url) if driver == "async" else url, backup_dir=backups
    )

    assert migrate(settings).action == "upgraded"
    assert not backups.exists()  # a new, empty database holds nothing to keep
    execute(url, "INSERT INTO t1 (name) VALUES ('ada'), ('grace')")
    assert migrate(settings).action == "noop"
    assert not backups.exists()  # no DDL, no backup

    add_revision(location, "r3", "r2", table="t3")
    result = migrate(settings)
    assert result.applied == ["r3"]
    [backup] = list(backups.iterdir())
    assert backup.name.startswith("app-r2-") and backup.suffix == ".sqlite"
    backup_url = f"sqlite:///{backup}"
    assert current_revisions(backup_url) == {"r2"}
    assert "t3" not in table_names(backup_url)
    assert execute(backup_url, "SELECT name FROM t1 ORDER BY id") == [[("ada",), ("grace",)]]

    # Restore as the README says: stop the app, copy the backup over the database file.
    shutil.copyfile(backup, database)
    assert current_revisions(url) == {"r2"}
    assert execute(url, "SELECT count(*) FROM t1") == [[(2,)]]


def test_no_backup_means_no_ddl(project: Path, tmp_path: Path) -> None:
    location = write_migrations(project, 1)
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    migrate(MigrateSettings(database_url=url))
    add_revision(location, "r2", "r1", table="t2")
    not_a_folder = tmp_path / "backups"
    not_a_folder.write_text("a file where the backup folder should be")
    with pytest.raises(ConfigurationError, match=r"MIGRATE_BACKUP_DIR.*nothing was migrated"):
        migrate(MigrateSettings(database_url=url, backup_dir=not_a_folder))
    assert current_revisions(url) == {"r1"}
    assert "t2" not in table_names(url)
