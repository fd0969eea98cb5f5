"""One lint run: the revisions in order, each rendered on its own, its statements held against
the tables that exist at that point.

Three ways to say which tables exist: a live database's (the pending revisions), those of the
history at revision A (``lint A:B``: the revisions below A rendered offline, their CREATE, DROP
and RENAME TABLE tracked), or, when no database answers, every revision on its own (the tables
the revisions before it created count as existing).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection

from .findings import Finding, Report, display_path
from .render import Rendered, Renderer
from .rules import RULES, Effect, classify
from .sql import statements
from .suppressions import read_suppressions
from .tables import database_tables, table_sizes


class Tables:
    """The tables that exist before the range, and those the range has created (new)."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = set(existing)
        self.new: set[str] = set()

    def apply(self, effect: Effect) -> None:
        for table in effect.created:
            self.new.add(table)
            self.existing.discard(table)
        for table in effect.dropped:
            self.existing.discard(table)
            self.new.discard(table)
        for old, new in effect.renamed:
            for group in (self.existing, self.new):
                if old in group:
                    group.discard(old)
                    group.add(new)

    def settle(self) -> None:
        """What was created so far now counts as existing (each revision on its own)."""
        self.existing |= self.new
        self.new.clear()


def lint(
    script: ScriptDirectory,
    revisions: Sequence[str],
    dialect: str,
    existing: set[str],
    *,
    before: Sequence[str] = (),
    each: bool = False,
) -> Report:
    """The findings of ``revisions`` (oldest first) for ``dialect``. ``before``: revisions
    rendered first only to learn the tables (``lint A:B``); ``each``: every revision checked as
    if it were the only one pending."""
    renderer = Renderer(dialect)
    tables = Tables(existing)
    report = Report()
    for revision_id in before:
        rendered = renderer.render(_script(script, revision_id))
        for executed in rendered.executed:
            for statement in statements(executed.sql):
                tables.apply(classify(statement, dialect, in_transaction=False))
    tables.settle()
    for revision_id in revisions:
        revision = _script(script, revision_id)
        report.checked.append(revision_id)
        _check(renderer.render(revision), dialect, tables, report)
        if each:
            tables.settle()
    return report


def _script(script: ScriptDirectory, revision_id: str) -> Script:
    revision = script.get_revision(revision_id)
    assert revision is not None
    return revision


def _check(rendered: Rendered, dialect: str, tables: Tables, report: Report) -> None:
    revision = rendered.revision
    file = display_path(revision.path)
    found: list[Finding] = []
    for executed in rendered.executed:
        for statement in statements(executed.sql):
            effect = classify(statement, dialect, in_transaction=executed.in_transaction)
            for table, hit in effect.hits:
                if table == "" or table in tables.existing:
                    found.append(
                        Finding(
                            hit.rule,
                            revision.revision,
                            file,
                            executed.line,
                            hit.table,
                            hit.blocks,
                            dialect_fix=hit.fix,
                        )
                    )
            tables.apply(effect)
    for table, line in rendered.rebuilds:
        if table.upper() in tables.existing:
            blocks = "batch mode copies the table into a new one (the database is write-locked)"
            found.append(
                Finding("batch-table-rebuild", revision.revision, file, line, table.upper(), blocks)
            )
    suppressions = read_suppressions(_text(revision.path), set(RULES))
    for finding in found:
        finding.allowed = suppressions.allowed.get(finding.rule)
    for line, rule, problem in suppressions.wrong:
        found.append(Finding(rule, revision.revision, file, line, None, problem))
    report.findings.extend(found)
    if rendered.problem is not None:
        at = f" at line {rendered.problem_line}" if rendered.problem_line else ""
        report.notes.append(
            f"{revision.revision} ({file}): not checked past{at}, where rendering it offline "
            f"stopped ({rendered.problem}); a revision that reads the database (op.get_bind()) "
            "cannot be checked beyond that"
        )


def _text(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError):
        return ""


def lint_pending(
    script: ScriptDirectory,
    pending: Sequence[str],
    connection: Connection,
    *,
    max_rows: int | None,
) -> Report:
    """The findings of the revisions pending on the connection's database, with the sizes of
    the tables they touch."""
    report = lint(script, pending, connection.dialect.name, database_tables(connection))
    add_sizes(report, connection, max_rows)
    return report


def add_sizes(report: Report, connection: Connection, max_rows: int | None) -> None:
    """Each finding's table size, and the lock and scan findings below ``max_rows`` waived."""
    named = {f.table for f in report.findings if f.table is not None}
    sizes = table_sizes(connection, named, count_up_to=max_rows)
    for finding in report.findings:
        if finding.table is None:
            continue
        finding.size = sizes.get(finding.table)
        rows = finding.size.rows if finding.size is not None else None
        if max_rows is not None and finding.kind == "lock" and rows is not None and rows < max_rows:
            finding.waived = True
