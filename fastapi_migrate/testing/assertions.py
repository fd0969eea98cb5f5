"""Checks a project runs in its own test suite, on real databases.

```python
from fastapi_migrate.testing import (
    assert_models_match_migrations, assert_single_head, assert_upgrade_downgrade_roundtrip,
)

def test_migrations():
    assert_single_head()
    assert_upgrade_downgrade_roundtrip()
    assert_models_match_migrations()
```

``settings`` defaults to ``MigrateSettings()`` (the app's environment, ``.env``, alembic.ini);
``url`` defaults to a new empty database on the test server (``--migrate-db-url``,
``MIGRATE_TEST_DATABASE_URL``, else a temporary SQLite file), dropped afterwards. Failures are
``AssertionError`` with a message that says what to fix.
"""

from __future__ import annotations

from alembic import command
from alembic.script import Script
from sqlalchemy import MetaData

from ..backends.database import Database
from ..core.engine import migrate
from ..core.lock import process_lock
from ..core.metadata import resolve_metadata
from ..core.redaction import error_line
from ..core.settings import MigrateSettings, url_optional
from ..glue.config import alembic_config, load_scripts
from ..glue.logging_guard import preserved_logging
from ..glue.schema_diff import schema_differences
from .janitor import scratch_database, template_settings


def _settings(settings: MigrateSettings | None) -> MigrateSettings:
    if settings is not None:
        return settings
    with url_optional():  # the URL comes from the test server, not DATABASE_URL
        return MigrateSettings()


def assert_single_head(settings: MigrateSettings | None = None) -> str:
    """The migrations have exactly one head (two branches made in parallel were merged); the
    head's id. Reads the scripts only, no database."""
    settings = _settings(settings)
    script = load_scripts(alembic_config(settings))
    heads = script.get_heads()
    if len(heads) != 1:
        where = script.dir
        if not heads:
            raise AssertionError(f"no migrations in {where}")
        raise AssertionError(
            f"{len(heads)} heads in {where}: {', '.join(sorted(heads))}; merge them with "
            f"`alembic merge -m 'merge heads' heads`"
        )
    return heads[0]


def _down_target(revision: Script) -> str:
    """Where undoing just this revision leads: one step down its own branch, or, for a merge,
    one of its parents (Alembic keeps the other parents applied)."""
    down = revision.down_revision
    if isinstance(down, tuple | list) and len(down) > 1:
        return str(down[0])
    return f"{revision.revision}@-1"


def assert_upgrade_downgrade_roundtrip(
    settings: MigrateSettings | None = None, *, url: str | None = None
) -> list[str]:
    """Every revision, oldest first, is upgraded, downgraded and upgraded again on a real,
    empty database (``url``): a ``downgrade()`` that forgets a table or an index fails on the
    second upgrade. Returns the revisions walked; the database ends at the head(s)."""
    settings = _settings(settings)
    walked: list[str] = []
    with scratch_database(url) as database_url:
        cfg = alembic_config(template_settings(settings, database_url), url=database_url)
        script = load_scripts(cfg)
        revisions = list(reversed(list(script.walk_revisions())))
        with process_lock(settings.lock_timeout), preserved_logging():
            for number, revision in enumerate(revisions, 1):
                steps = (
                    ("upgrade to", command.upgrade, revision.revision),
                    ("downgrade from", command.downgrade, _down_target(revision)),
                    ("upgrade again to", command.upgrade, revision.revision),
                )
                for label, step, target in steps:
                    try:
                        step(cfg, target)
                    except Exception as error:
                        raise AssertionError(
                            f"{label} revision {revision.revision} ({number} of "
                            f"{len(revisions)}, {revision.doc or 'no message'!r}) failed: "
                            f"{error_line(error, [database_url])}"
                        ) from error
                walked.append(revision.revision)
    return walked


def assert_models_match_migrations(
    metadata: MetaData | None = None,
    settings: MigrateSettings | None = None,
    *,
    url: str | None = None,
) -> None:
    """The schema the migrations build equals what ``metadata`` (the models) describes, as
    Alembic's autogenerate compares them; on failure every difference is listed.

    ``metadata`` defaults to ``MIGRATE_METADATA``; ``url`` is migrated to the target first."""
    settings = _settings(settings)
    found = resolve_metadata(metadata, settings.metadata)
    if found is None:
        raise AssertionError(
            "assert_models_match_migrations needs the models: pass metadata=Base.metadata "
            "or set MIGRATE_METADATA=app.models:Base.metadata"
        )
    with scratch_database(url) as database_url:
        # Replay the migrations even where the app would create_all an empty database.
        built = template_settings(settings, database_url).model_copy(
            update={"empty_database": "upgrade"}
        )
        migrate(built, metadata=found)
        db = Database(database_url)
        try:
            differences = db.run(
                lambda c: schema_differences(
                    c,
                    found,
                    version_tables=[n.version_table for _, n in settings.each_tree()],
                    version_table_schema=settings.version_table_schema,
                )
            )
        finally:
            db.dispose()
    if differences:
        lines = "\n".join(f"  - {line}" for line in differences)
        raise AssertionError(
            f"the models differ from the schema the migrations build "
            f"({len(differences)} difference(s)):\n{lines}\n"
            "write a migration for them: fastapi-migrate revision --autogenerate -m '...'"
        )
