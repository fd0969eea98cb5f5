from pathlib import Path

from fastapi_migrate import MigrateSettings, migrate

from .support import current_revisions, table_names, write_migrations


def test_upgrade_then_noop(project: Path, database_url: str) -> None:
    write_migrations(project, 3)
    settings = MigrateSettings(database_url=database_url)
    first = migrate(settings)
    assert first.action == "upgraded"
    assert first.applied == ["r1", "r2", "r3"]
    assert {"t1", "t2", "t3"} <= table_names(database_url)
    assert current_revisions(database_url) == {"r3"}
    second = migrate(settings)
    assert second.action == "noop"
    assert second.applied == []
