"""Checks a project runs in its own test suite, on real databases.

```python
from fastapi_migrate.testing import (
    assert_downgrade_leaves_no_trace, assert_models_match_migrations, assert_single_head,
    assert_upgrade_downgrade_roundtrip,
)

def test_migrations():
    assert_single_head()
    assert_upgrade_downgrade_roundtrip(irreversible=["3f2a1c"])  # undone by nothing, on purpose
    assert_downgrade_leaves_no_trace(irreversible=["3f2a1c"])
    assert_models_match_migrations()
```

``settings`` defaults to ``MigrateSettings()`` (the app's environment, ``.env``, alembic.ini);
``url`` defaults to a new empty database on the test server (``--migrate-db-url``,
``MIGRATE_TEST_DATABASE_URL``, else a temporary SQLite file), dropped afterwards. Failures are
``AssertionError`` with a message that says what to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from alembic import command
from alembic.script import Script, ScriptDirectory
from sqlalchemy import MetaData

from ..backends.database import Database
from ..backends.lease import LEASE_TABLE
from ..engine.lock import process_lock
from ..engine.start import migrate
from ..foundation.errors import MigrationError
from ..foundation.metadata import resolve_metadata
from ..foundation.redaction import error_line
from ..foundation.settings import MigrateSettings, url_optional
from ..glue.config import alembic_config, load_scripts
from ..glue.logging_guard import preserved_logging
from ..glue.schema_diff import schema_differences, schema_snapshot, snapshot_differences
from .janitor import scratch_database, template_settings

log = logging.getLogger("fastapi_migrate")


def _settings(settings: MigrateSettings | None) -> MigrateSettings:
    if settings is not None:
        return settings
    with url_optional():  # the URL comes from the test server, not DATABASE_URL
        return MigrateSettings()


def assert_single_head(settings: MigrateSettings | None = None) -> str | None:
    """The migrations have at most one head (two branches made in parallel were merged); the
    head's id, or None for a project with no revision yet, which passes (pytest-alembic 0.13's
    ``test_single_head_revision`` fails it: "Expected 1 head revision, found 0"). Reads the
    scripts only, no database."""
    settings = _settings(settings)
    script = load_scripts(alembic_config(settings))
    heads = script.get_heads()
    if len(heads) > 1:
        raise AssertionError(
            f"{len(heads)} heads in {script.dir}: {', '.join(sorted(heads))}; merge them with "
            f"`alembic merge -m 'merge heads' heads`"
        )
    return heads[0] if heads else None


def _down_target(revision: Script) -> str:
    """Where undoing just this revision leads: one step down its own branch, or, for a merge,
    one of its parents (Alembic keeps the other parents applied)."""
    down = revision.down_revision
    if isinstance(down, tuple | list) and len(down) > 1:
        return str(down[0])
    return f"{revision.revision}@-1"


class _Walk:
    """Every revision, oldest first, on a scratch database: the steps both round trips take."""

    def __init__(
        self, settings: MigrateSettings, database_url: str, irreversible: Collection[str]
    ) -> None:
        self.cfg = alembic_config(template_settings(settings, database_url), url=database_url)
        self.url = database_url
        script = load_scripts(self.cfg)
        self.revisions = list(reversed(list(script.walk_revisions())))
        self.irreversible = _resolve(script, irreversible)

    def step(self, number: int, revision: Script, label: str) -> None:
        """``upgrade to``, ``downgrade from`` or ``upgrade again to`` this revision."""
        if label == "downgrade from":
            call, target = command.downgrade, _down_target(revision)
        else:
            call, target = command.upgrade, revision.revision
        try:
            call(self.cfg, target)
        except MigrationError:
            raise  # env.py reaches another database, or another version table: nothing ran
        except Exception as error:
            hint = ""
            if label == "downgrade from":
                hint = (
                    f"; if it cannot be undone on purpose, pass irreversible=["
                    f"{revision.revision!r}]"
                )
            raise AssertionError(
                f"{label} {self.describe(number, revision)} failed: "
                f"{error_line(error, [self.url])}{hint}"
            ) from error

    def describe(self, number: int, revision: Script) -> str:
        return (
            f"revision {revision.revision} ({number} of {len(self.revisions)}, "
            f"{revision.doc or 'no message'!r})"
        )

    def reversible(self, revision: Script) -> bool:
        if revision.revision not in self.irreversible:
            return True
        log.info(
            "revision %s is irreversible (irreversible=...): upgraded through, not downgraded",
            revision.revision,
        )
        return False


def _resolve(script: ScriptDirectory, revisions: Collection[str]) -> frozenset[str]:
    """The full ids of ``revisions`` (prefixes allowed, as Alembic allows them)."""
    if isinstance(revisions, str):
        revisions = [revisions]
    found = set()
    for given in revisions:
        try:
            revision = script.get_revision(given)
        except Exception:
            revision = None
        if revision is None:
            raise AssertionError(f"irreversible: {given!r} is not a revision in {script.dir}")
        found.add(revision.revision)
    return frozenset(found)


def assert_upgrade_downgrade_roundtrip(
    settings: MigrateSettings | None = None,
    *,
    url: str | None = None,
    irreversible: Collection[str] = (),
) -> list[str]:
    """Every revision, oldest first, is upgraded, downgraded and upgraded again on a real,
    empty database (``url``): a ``downgrade()`` that forgets a table or an index fails on the
    second upgrade. Revisions in ``irreversible`` (a data migration, a dropped column: undone
    by no ``downgrade()``, on purpose) are upgraded through, never downgraded past; the log
    says so. Returns the revisions walked; the database ends at the head(s)."""
    settings = _settings(settings)
    walked: list[str] = []
    with scratch_database(url) as database_url:
        walk = _Walk(settings, database_url, irreversible)
        with process_lock(settings.lock_timeout), preserved_logging():
            for number, revision in enumerate(walk.revisions, 1):
                walk.step(number, revision, "upgrade to")
                if walk.reversible(revision):
                    walk.step(number, revision, "downgrade from")
                    walk.step(number, revision, "upgrade again to")
                walked.append(revision.revision)
    return walked


def assert_downgrade_leaves_no_trace(
    settings: MigrateSettings | None = None,
    *,
    url: str | None = None,
    irreversible: Collection[str] = (),
) -> list[str]:
    """For every revision, oldest first, the schema after its upgrade then its downgrade is
    the schema before it, as the database reports it (tables, columns and their types,
    indexes, constraints, views, sequences, PostgreSQL enums): a downgrade that renames a table
    instead of dropping it, or forgets an index or an enum, is named with the difference.
    Revisions in ``irreversible`` are upgraded through and not checked. Returns the revisions
    checked; the database ends at the head(s)."""
    settings = _settings(settings)
    leave_out = {narrowed.version_table for _, narrowed in settings.each_tree()} | {LEASE_TABLE}
    schema = settings.version_table_schema
    checked: list[str] = []
    with scratch_database(url) as database_url:
        walk = _Walk(settings, database_url, irreversible)
        db = Database(database_url)

        def snapshot() -> dict[str, str]:
            return db.run(lambda c: schema_snapshot(c, leave_out=leave_out, schema=schema))

        try:
            with process_lock(settings.lock_timeout), preserved_logging():
                before = snapshot()
                for number, revision in enumerate(walk.revisions, 1):
                    walk.step(number, revision, "upgrade to")
                    upgraded = snapshot()
                    if walk.reversible(revision):
                        walk.step(number, revision, "downgrade from")
                        differences = snapshot_differences(before, snapshot())
                        if differences:
                            lines = "\n".join(f"  - {line}" for line in differences)
                            raise AssertionError(
                                f"the downgrade of {walk.describe(number, revision)} leaves "
                                f"the schema different from before its upgrade:\n{lines}\n"
                                "make downgrade() undo exactly what upgrade() does"
                            )
                        walk.step(number, revision, "upgrade again to")
                        checked.append(revision.revision)
                    before = upgraded
        finally:
            db.dispose()
    return checked


def assert_models_match_migrations(
    metadata: MetaData | None = None,
    settings: MigrateSettings | None = None,
    *,
    url: str | None = None,
) -> None:
    """The schema the migrations build equals what ``metadata`` (the models) describes, as
    Alembic's autogenerate compares them; on failure every difference is listed.

    ``metadata`` defaults to ``MIGRATE_METADATA``; ``url`` is migrated to the target first
    (``head``: every head, where the history has branches not merged yet)."""
    settings = _settings(settings)
    found = resolve_metadata(metadata, settings.metadata)
    if found is None:
        raise AssertionError(
            "assert_models_match_migrations needs the models: pass metadata=Base.metadata "
            "or set MIGRATE_METADATA=app.models:Base.metadata"
        )
    with scratch_database(url) as database_url:
        # Replay the migrations even where the app would create_all an empty database; a
        # branched history is compared at all its heads (as pytest-alembic does).
        update: dict[str, str] = {"empty_database": "upgrade"}
        if settings.target == "head":
            update["target"] = "heads"
        built = template_settings(settings, database_url).model_copy(update=update)
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
