"""The rules: what a statement does to an existing table of a live database, per dialect.

Names follow squawk's where squawk has the rule. Each rule has a kind: ``lock`` (a lock held
while a table is scanned, rewritten or copied: harmless on a small table, so
``MIGRATE_UNSAFE_MAX_ROWS`` can waive it), ``breaking`` (the replicas still running the previous
release break, whatever the size) or ``error`` (the revision fails, or the check itself is
misused).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .sql import bare_name, split_top_level

Kind = Literal["lock", "breaking", "error"]
_HitFn = Callable[..., None]

_TWO_RELEASES = (
    "two releases: first ship code that no longer uses it, then {verb} it in a later release"
)


@dataclass(frozen=True)
class Rule:
    name: str
    kind: Kind
    fix: str


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "require-concurrent-index-creation",
            "lock",
            "create it CONCURRENTLY (op.create_index(..., postgresql_concurrently=True)) inside "
            "`with op.get_context().autocommit_block():`",
        ),
        Rule(
            "ban-concurrent-index-creation-in-transaction",
            "error",
            "run it inside `with op.get_context().autocommit_block():` (CONCURRENTLY cannot run "
            "in a transaction block)",
        ),
        Rule(
            "adding-foreign-key-constraint",
            "lock",
            "add it NOT VALID (postgresql_not_valid=True, or raw SQL), then VALIDATE CONSTRAINT "
            "in a later revision (a lock that lets reads and writes through)",
        ),
        Rule(
            "constraint-missing-not-valid",
            "lock",
            "add it NOT VALID, then VALIDATE CONSTRAINT in a later revision",
        ),
        Rule(
            "adding-not-nullable-field",
            "lock",
            "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later revision, then SET NOT "
            "NULL (PostgreSQL 12+ then skips the scan) and drop the check; a new column: add it "
            "nullable or with a constant DEFAULT",
        ),
        Rule(
            "changing-column-type",
            "lock",
            "add a new column of the new type, backfill it in batches, switch the code to it, "
            "drop the old column in a later release",
        ),
        Rule(
            "adding-field-with-default",
            "lock",
            "add the column without a default (or with a constant one), then set the default "
            "and backfill in batches",
        ),
        Rule(
            "disallowed-unique-constraint",
            "lock",
            "CREATE UNIQUE INDEX CONCURRENTLY in an autocommit_block, then ADD CONSTRAINT ... "
            "UNIQUE (or PRIMARY KEY) USING INDEX",
        ),
        Rule(
            "renaming-column",
            "breaking",
            "add the new column, write both, backfill, switch reads, drop the old one in a "
            "later release",
        ),
        Rule(
            "renaming-table",
            "breaking",
            "create the new table (or a view under the old name), switch the code, drop the "
            "old name in a later release",
        ),
        Rule("ban-drop-column", "breaking", _TWO_RELEASES.format(verb="drop")),
        Rule("ban-drop-table", "breaking", _TWO_RELEASES.format(verb="drop")),
        Rule(
            "batch-table-rebuild",
            "lock",
            "fine on a small table; on a large one, plan the rebuild for a quiet moment (the "
            "database is write-locked while the table is copied)",
        ),
        Rule(
            "suppression-without-reason",
            "error",
            "give the reason: `# fastapi-migrate: allow <rule> -- <why it is safe here>`",
        ),
        Rule(
            "unknown-rule",
            "error",
            "use one of the rule names of `fastapi-migrate lint` (README, Safe deploys)",
        ),
    )
}


@dataclass(frozen=True)
class Hit:
    """One rule a statement breaks: on which table, and what it blocks."""

    rule: str
    table: str | None
    blocks: str
    fix: str | None = None  # where the dialect's fix differs from the rule's


@dataclass
class Effect:
    """What a statement does to the set of tables: created, dropped, renamed (old, new)."""

    created: list[str]
    dropped: list[str]
    renamed: list[tuple[str, str]]
    hits: list[tuple[str, Hit]]  # (the table it touches, or "" for any table; the hit)


_NAME = r"([\w$]+(?:\s?\.\s?[\w$]+)*)"
_CREATE_TABLE = re.compile(
    rf"^CREATE (?:OR REPLACE )?(?:(?:GLOBAL |LOCAL )?(?:TEMPORARY |TEMP |UNLOGGED ))?TABLE "
    rf"(?:IF NOT EXISTS )?{_NAME}"
)
_DROP_TABLE = re.compile(r"^DROP TABLE (?:IF EXISTS )?(.*?)(?: CASCADE| RESTRICT)?$")
_CREATE_INDEX = re.compile(
    rf"^CREATE (UNIQUE )?INDEX (CONCURRENTLY )?(?:IF NOT EXISTS )?(?:{_NAME} )?ON (?:ONLY )?{_NAME}"
)
_CONCURRENTLY = re.compile(r"^(?:DROP INDEX|REINDEX(?: \w+)?) CONCURRENTLY\b")
_ALTER_TABLE = re.compile(rf"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?{_NAME} (.*)$")
_RENAME_TABLE = re.compile(rf"^RENAME TABLE {_NAME} TO {_NAME}")
_VOLATILE_OK = re.compile(
    r"^(?:NOW|CURRENT_TIMESTAMP|CURRENT_DATE|CURRENT_TIME|LOCALTIMESTAMP|LOCALTIME|"
    r"TRANSACTION_TIMESTAMP|STATEMENT_TIMESTAMP|TIMEZONE|CAST|LOWER|UPPER|ARRAY|JSONB_BUILD_OBJECT"
    r"|JSON_BUILD_OBJECT|TO_JSON|TO_JSONB)$"
)
_SERIAL = re.compile(r"^(?:SMALL|BIG)?SERIAL\b")


def classify(statement: str, dialect: str, *, in_transaction: bool) -> Effect:
    """What one normalized statement does (``sql.statements``), for ``dialect``."""
    effect = Effect([], [], [], [])
    if m := _CREATE_TABLE.match(statement):
        effect.created.append(bare_name(m.group(1)))
        return effect
    if m := _DROP_TABLE.match(statement):
        for name in split_top_level(m.group(1)):
            table = bare_name(name)
            effect.dropped.append(table)
            effect.hits.append((table, Hit("ban-drop-table", table, "drops a table")))
        return effect
    if m := _RENAME_TABLE.match(statement):
        _rename_table(effect, bare_name(m.group(1)), bare_name(m.group(2)))
        return effect
    if m := _CREATE_INDEX.match(statement):
        _create_index(effect, m, dialect, in_transaction=in_transaction)
        return effect
    if dialect == "postgresql" and in_transaction and _CONCURRENTLY.match(statement):
        effect.hits.append(
            ("", Hit("ban-concurrent-index-creation-in-transaction", None, _IN_TRANSACTION))
        )
        return effect
    if m := _ALTER_TABLE.match(statement):
        table = bare_name(m.group(1))
        for action in split_top_level(m.group(2)):
            _alter(effect, table, action, dialect)
    return effect


_IN_TRANSACTION = (
    "CONCURRENTLY inside a transaction block: PostgreSQL refuses it, the revision fails at run time"
)


def _create_index(effect: Effect, m: re.Match[str], dialect: str, *, in_transaction: bool) -> None:
    table = bare_name(m.group(4))
    concurrently = m.group(2) is not None
    if dialect != "postgresql":
        return  # MySQL/MariaDB build indexes in place (writes go on); SQLite: one writer anyway
    if concurrently:
        if in_transaction:
            hit = Hit("ban-concurrent-index-creation-in-transaction", table, _IN_TRANSACTION)
            effect.hits.append(("", hit))
        return
    effect.hits.append(
        (
            table,
            Hit(
                "require-concurrent-index-creation",
                table,
                "SHARE lock for the whole index build: every INSERT, UPDATE and DELETE waits",
            ),
        )
    )


def _rename_table(effect: Effect, old: str, new: str) -> None:
    effect.renamed.append((old, new))
    effect.hits.append((old, Hit("renaming-table", old, f"renames the table to {new.lower()}")))


def _alter(effect: Effect, table: str, action: str, dialect: str) -> None:
    """One action of ALTER TABLE."""
    pg, mysql = dialect == "postgresql", dialect in ("mysql", "mariadb")

    def hit(rule: str, blocks: str, fix: str | None = None) -> None:
        effect.hits.append((table, Hit(rule, table, blocks, fix)))

    if m := re.match(rf"^RENAME TO {_NAME}", action):
        _rename_table(effect, table, bare_name(m.group(1)))
    elif re.match(r"^RENAME (?:CONSTRAINT|INDEX|KEY) ", action):
        return
    elif m := re.match(r"^RENAME (?:COLUMN )?([\w$]+) TO ([\w$]+)", action):
        hit("renaming-column", f"renames column {m.group(1).lower()} to {m.group(2).lower()}")
    elif m := re.match(r"^DROP (?:COLUMN )?(?:IF EXISTS )?([\w$]+)", action):
        if m.group(1) not in _NOT_COLUMNS:
            hit("ban-drop-column", f"drops column {m.group(1).lower()}")
    elif m := re.match(
        r"^ADD (?:CONSTRAINT ([\w$]+) )?(FOREIGN KEY|CHECK|UNIQUE|PRIMARY KEY)\b(.*)$", action
    ):
        # Named in the message: a batch that adds five CHECKs gives five lines, one per name.
        kind = m.group(2) if m.group(1) is None else f"{m.group(2)} {m.group(1).lower()}"
        _add_constraint(hit, m.group(2), kind, m.group(3), pg=pg, mysql=mysql)
    elif m := re.match(r"^ADD (?:COLUMN )?(?:IF NOT EXISTS )?([\w$]+) (.*)$", action):
        if m.group(1) not in _NOT_COLUMNS:
            _add_column(hit, m.group(1).lower(), m.group(2), pg=pg, mysql=mysql)
    elif pg and (m := re.match(r"^ALTER (?:COLUMN )?([\w$]+) (.*)$", action)):
        column, rest = m.group(1).lower(), m.group(2)
        if rest.startswith("SET NOT NULL"):
            hit(
                "adding-not-nullable-field",
                f"SET NOT NULL on {column}: ACCESS EXCLUSIVE lock while every row is scanned "
                "(reads and writes wait)",
            )
        elif re.match(r"^(?:SET DATA )?TYPE ", rest):
            hit(
                "changing-column-type",
                f"type of {column}: ACCESS EXCLUSIVE lock while the table and its indexes are "
                "rewritten (reads and writes wait)",
            )
    elif mysql and (m := re.match(r"^(MODIFY|CHANGE) (?:COLUMN )?([\w$]+) (?:([\w$]+) )?", action)):
        old, new = m.group(2), m.group(3)
        if m.group(1) == "CHANGE" and new is not None and new != old:
            hit("renaming-column", f"renames column {old.lower()} to {new.lower()}")
        else:
            hit(
                "changing-column-type",
                f"{m.group(1)} of {old.lower()}: a type change runs ALGORITHM=COPY (the table "
                "is copied, writes wait); only a nullability, default or VARCHAR length change "
                "can run INPLACE or INSTANT",
            )
    elif mysql and action.startswith("CONVERT TO CHARACTER SET"):
        hit("changing-column-type", "CONVERT TO CHARACTER SET copies the table (writes wait)")


_MYSQL_FK_FIX = (
    "run that ALTER with SET foreign_key_checks=0 (ALGORITHM=INPLACE, existing rows unchecked), "
    "or use an online schema change tool (gh-ost, pt-online-schema-change)"
)
_NOT_COLUMNS = frozenset(
    {"CONSTRAINT", "INDEX", "KEY", "PRIMARY", "FOREIGN", "CHECK", "UNIQUE", "DEFAULT", "PARTITION"}
)


def _add_constraint(
    hit: _HitFn, kind: str, named: str, rest: str, *, pg: bool, mysql: bool
) -> None:
    """``kind``: FOREIGN KEY, CHECK, UNIQUE or PRIMARY KEY; ``named``: the same with its name."""
    not_valid = "NOT VALID" in rest
    if kind == "FOREIGN KEY":
        if pg and not not_valid:
            hit(
                "adding-foreign-key-constraint",
                f"a validated {named}: SHARE ROW EXCLUSIVE lock on this table and the "
                "referenced one while every row is checked (writes wait)",
            )
        elif mysql:
            hit(
                "adding-foreign-key-constraint",
                f"ADD {named} with foreign_key_checks=1 runs ALGORITHM=COPY: the table is "
                "copied, writes wait",
                _MYSQL_FK_FIX,
            )
    elif kind == "CHECK" and pg and not not_valid:
        hit(
            "constraint-missing-not-valid",
            f"a validated {named}: ACCESS EXCLUSIVE lock while every row is checked (reads and "
            "writes wait)",
        )
    elif kind in ("UNIQUE", "PRIMARY KEY") and pg and "USING INDEX" not in rest:
        hit(
            "disallowed-unique-constraint",
            f"ADD {named}: ACCESS EXCLUSIVE lock while its index is built (reads and writes wait)",
        )


def _add_column(hit: _HitFn, column: str, rest: str, *, pg: bool, mysql: bool) -> None:
    if not pg:
        return  # MySQL 8.0.29+ / MariaDB 10.3+ add a column INSTANT; SQLite appends it
    default = re.search(
        r"\bDEFAULT (.*?)(?: NOT NULL| NULL| CONSTRAINT| REFERENCES| CHECK|$)", rest
    )
    if _SERIAL.match(rest) or re.search(r"\bGENERATED ALWAYS AS \(.*\) STORED", rest):
        hit(
            "adding-field-with-default",
            f"{column}: a serial or stored generated column rewrites the table under ACCESS "
            "EXCLUSIVE lock",
        )
    elif default is not None and _volatile(default.group(1)):
        hit(
            "adding-field-with-default",
            f"{column}: a volatile DEFAULT rewrites the table under ACCESS EXCLUSIVE lock "
            "(reads and writes wait)",
        )
    elif "NOT NULL" in rest and default is None and "GENERATED" not in rest:
        hit(
            "adding-not-nullable-field",
            f"{column}: NOT NULL without a DEFAULT fails on a table that has rows",
        )
    if re.search(r"\bREFERENCES\b", rest):
        hit(
            "adding-foreign-key-constraint",
            f"{column} REFERENCES: a validated foreign key, SHARE ROW EXCLUSIVE lock while every "
            "row is checked",
        )
    if re.search(r"\b(?:UNIQUE|PRIMARY KEY)\b", rest):
        hit("disallowed-unique-constraint", f"{column}: its unique index is built under lock")


def _volatile(expression: str) -> bool:
    """Whether a DEFAULT calls a function PostgreSQL may not evaluate once (11+ stores a
    non-volatile default without rewriting)."""
    calls = re.findall(r"([\w$.]+) \(", expression)
    return any(not _VOLATILE_OK.match(call.rsplit(".", 1)[-1]) for call in calls)
