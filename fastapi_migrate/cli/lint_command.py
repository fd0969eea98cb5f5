"""``fastapi-migrate lint [A:B] [--format text|json]``: which revisions, against which tables.

No range: the revisions pending on the configured database, against its tables (and with their
sizes). ``A:B``: the revisions after A up to B, against the tables the history has at A (the
database, when it answers, only gives sizes; nothing is migrated). A database that does not
answer: every revision, each on its own, and the output says so.

``A:B`` renders offline: the URL gives the dialect, and the database is reached (its driver
imported) only when a finding names a table whose size it can tell.
"""

from __future__ import annotations

import sys

from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from ..backends import backend_for
from ..backends.database import Database, check_dialect
from ..backends.drivers import parse_url
from ..engine.plan import plan_migration
from ..engine.version_table import VersionTable, read_states
from ..foundation.errors import ConfigurationError, MigrationError
from ..foundation.redaction import error_line
from ..foundation.settings import MigrateSettings
from ..glue.config import alembic_config, load_scripts
from ..lint import Report, add_sizes, lint
from ..lint.tables import database_tables


def run_lint(settings: MigrateSettings, rev_range: str | None, output: str) -> int:
    """Lint, print the findings (``output``: text or json); 1 when one counts, else 0."""
    url = settings.database_url or settings.ddl_url
    if url is None:
        raise ConfigurationError(
            "DATABASE_URL: lint needs the database URL, for its dialect at least (set "
            "DATABASE_URL or pass --database-url; it need not be reachable)"
        )
    script = load_scripts(alembic_config(settings))
    if rev_range is not None:
        report = _range(script, url, settings, rev_range)
    else:
        db = _database(url, settings)
        try:
            report = _pending(script, db, settings)
        finally:
            db.dispose()
    if output == "json":
        print(report.json())
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        print(report.summary(), file=sys.stderr)
    else:
        print(report.text())
    return 1 if report.blocking else 0


def _database(url: str, settings: MigrateSettings) -> Database:
    return Database(url, connect_timeout=min(settings.connect_timeout, 10.0))


def _range(script: ScriptDirectory, url: str, settings: MigrateSettings, rev_range: str) -> Report:
    parsed = parse_url(url)
    check_dialect(parsed)
    lower, sep, upper = rev_range.partition(":")
    if not sep or not upper:
        raise ConfigurationError(
            f"lint {rev_range}: give a range A:B (e.g. base:head, abc123:head)"
        )
    lower = lower or "base"
    try:
        revisions = _upgrade_order(script, upper, lower)
        before = _upgrade_order(script, lower, "base") if lower != "base" else []
    except (CommandError, RevisionError) as error:
        raise ConfigurationError(f"lint {rev_range}: {error}") from None
    report = lint(script, revisions, parsed.get_backend_name(), set(), before=before)
    if not any(f.table for f in report.findings):
        return report  # no size to read: no connection, no driver imported
    db = _database(url, settings)
    try:
        db.run(lambda c: add_sizes(report, c, None))
    except (SQLAlchemyError, OSError, MigrationError):
        report.notes.append("the database did not answer: no table sizes")
    finally:
        db.dispose()
    return report


def _upgrade_order(script: ScriptDirectory, upper: str, lower: str) -> list[str]:
    """The revisions after ``lower`` up to ``upper``, in the order an upgrade runs them."""
    found = script.iterate_revisions(upper, lower)
    return [r.revision for r in reversed(list(found))]


def _pending(script: ScriptDirectory, db: Database, settings: MigrateSettings) -> Report:
    file = backend_for(db.url.get_backend_name()).database_file(db.url)
    if file is not None and not file.exists():  # reading it would create it: it is empty
        revisions = _upgrade_order(script, "heads", "base")
        return lint(script, revisions, db.url.get_backend_name(), set())
    table = VersionTable(settings.version_table, settings.version_table_schema)

    def check(connection: Connection) -> Report:
        state = read_states(connection, [table], adoptable=[settings.baseline is not None])[0]
        plan = plan_migration(state, script, target=settings.target, baseline=settings.baseline)
        report = lint(script, plan.pending, connection.dialect.name, database_tables(connection))
        add_sizes(report, connection, settings.unsafe_max_rows)
        if not plan.pending:
            report.notes.append(f"nothing pending: the database is at {plan.from_revision}")
        return report

    try:
        return db.run(check)
    except (SQLAlchemyError, OSError) as error:
        reason = error_line(error, [db.url])
    revisions = _upgrade_order(script, "heads", "base")
    report = lint(script, revisions, db.url.get_backend_name(), set(), each=True)
    report.notes.insert(
        0,
        f"the database did not answer ({reason}): every revision checked on its own, against "
        "the tables the revisions before it create",
    )
    return report
