"""``MigrationTree``: one package's migrations (auth, billing, the app) with its own version table.

Several trees in one app are listed in ``MigrateSettings.trees`` (``MIGRATE_TREES`` as JSON) and
migrated in list order under one lock, as Websauna's ``ws-alembic`` does with a version table
per package. One tree with several heads in one version table is Alembic's own branch layout and
needs no trees: ``MIGRATE_TARGET=heads``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

# \Z, not $: "abc\n" must not pass (a $ matches before a trailing newline).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


class MigrationTree(BaseModel):
    """A script folder and the version table that records how far it has run.

    ``target`` defaults to ``MIGRATE_TARGET``; ``baseline`` is stamped when this tree's version
    table is missing but the database has tables (its schema predates the version table);
    ``name`` (default: the version table) labels the tree in results, logs and errors.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    script_location: str
    version_table: str
    target: str | None = None
    baseline: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_from_version_table(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and data.get("version_table"):
            return {**data, "name": data["version_table"]}
        return data

    @field_validator("version_table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(
                f"{value!r} is not a plain SQL identifier (letters, digits, _; at most 63)"
            )
        return value

    @field_validator("name", "script_location", "target", "baseline")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value is not None else None


def check_trees(trees: list[MigrationTree], *, empty_database: str, baseline: str | None) -> None:
    """Settings that cannot work with several trees; raises ``ValueError`` naming the variable."""
    for attribute in ("version_table", "name"):
        values = [getattr(tree, attribute) for tree in trees]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(
                f"MIGRATE_TREES: each tree needs its own {attribute}; "
                f"{', '.join(repeated)} repeated"
            )
    if trees and empty_database == "create_all":
        # One metadata cannot be trusted to hold every package's tables: a package's tree would
        # be stamped at head with no tables.
        raise ValueError(
            "MIGRATE_EMPTY_DATABASE=create_all cannot be combined with MIGRATE_TREES: an empty "
            "database is brought up by replaying each tree's migrations"
        )
    if trees and baseline is not None:
        raise ValueError(
            "MIGRATE_BASELINE is one tree's revision: with MIGRATE_TREES give the tree its "
            '"baseline" instead'
        )
