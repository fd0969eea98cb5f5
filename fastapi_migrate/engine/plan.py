"""``plan_migration``: from the database's state and the scripts, decide what must happen."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from alembic.script import ScriptDirectory
from alembic.script.revision import MultipleHeads as AlembicMultipleHeads
from alembic.script.revision import RangeNotAncestorError, ResolutionError, Revision, RevisionError
from alembic.util import CommandError

from ..foundation.errors import (
    ConfigurationError,
    MultipleHeads,
    UnknownRevision,
    UnversionedDatabase,
)
from .version_table import DatabaseState, at_target

log = logging.getLogger("fastapi_migrate")

Action = Literal["noop", "upgraded", "created", "adopted"]


@dataclass(frozen=True)
class MigrationPlan:
    """What to do: ``action``, from where to where, and which revisions that applies."""

    action: Action
    from_revision: str | None
    to_revision: str | None
    pending: tuple[str, ...] = ()
    baseline: str | None = None
    create_all: bool = False
    target_revisions: tuple[str, ...] = field(default=())


def format_revisions(revisions: tuple[str, ...] | list[str]) -> str | None:
    """Several heads are shown joined by commas, as Alembic prints them."""
    return ",".join(revisions) if revisions else None


def resolve_target(script: ScriptDirectory, target: str) -> tuple[str, ...]:
    """The revision ids ``target`` names; ``MultipleHeads`` when ``head`` is ambiguous."""
    try:
        # The revision map's own errors: ScriptDirectory.get_revisions hides MultipleHeads in a
        # CommandError.
        revisions = script.revision_map.get_revisions(target)
    except AlembicMultipleHeads:
        heads = ", ".join(script.get_heads())
        raise MultipleHeads(
            f"the migration scripts have several heads ({heads}); merge them "
            "(alembic merge heads / fastapi-migrate revision --merge) or set MIGRATE_TARGET=heads"
        ) from None
    except (RevisionError, CommandError) as error:
        raise ConfigurationError(f"MIGRATE_TARGET: {error}") from None
    return tuple(r.revision for r in revisions if isinstance(r, Revision))


def ancestry(script: ScriptDirectory, revisions: tuple[str, ...]) -> list[str]:
    """``revisions`` and all below them, newest first (Alembic's walk order)."""
    if not revisions:
        return []
    return [s.revision for s in script.iterate_revisions(revisions, "base")]


def _check_known(script: ScriptDirectory, state: DatabaseState) -> str | None:
    """The first database revision the scripts do not have, if any."""
    for revision in state.revisions:
        try:
            if script.get_revision(revision) is None:
                return revision
        except (ResolutionError, CommandError):
            return revision
    return None


def plan_migration(
    state: DatabaseState,
    script: ScriptDirectory,
    *,
    target: str = "head",
    empty_database: str = "upgrade",
    baseline: str | None = None,
    unknown_revision: str = "error",
    baseline_setting: str = "MIGRATE_BASELINE",
) -> MigrationPlan:
    """Decide the action for ``state`` (SPEC section 3); raises for states that need a human.

    ``baseline_setting`` names where a baseline is given, for the error that asks for one."""
    targets = resolve_target(script, target)
    to_revision = format_revisions(targets)
    current = format_revisions(state.revisions)

    if state.is_unversioned:
        if baseline is None:
            raise UnversionedDatabase(
                "the database has tables but no version table, so fastapi-migrate does not "
                f"know which migrations it already has and will not touch it; set "
                f"{baseline_setting} to the revision its schema matches (it is stamped, then "
                "upgraded), or stamp it yourself (fastapi-migrate stamp REV); if these tables "
                "were made before the first migration (create_all, then migrations from the "
                f"first revision on), {baseline_setting}=base adopts them and runs every "
                "revision"
            )
        try:
            baseline_ids = resolve_target(script, baseline)
        except ConfigurationError as error:
            raise ConfigurationError(
                str(error).replace("MIGRATE_TARGET", baseline_setting)
            ) from None
        pending = _pending(script, baseline_ids, targets)
        return MigrationPlan(
            "adopted",
            None,
            to_revision,
            pending,
            baseline=format_revisions(baseline_ids),
            target_revisions=targets,
        )

    unknown = _check_known(script, state)
    if unknown is not None:
        message = (
            f"the database is at revision {unknown}, which the migration scripts do not "
            "know: it was migrated by newer code. Deploy that code again, or downgrade the "
            "database with the code that has the revision"
        )
        if unknown_revision == "ignore":
            log.warning("%s; MIGRATE_UNKNOWN_REVISION=ignore, so starting anyway", message)
            return MigrationPlan("noop", current, current, target_revisions=targets)
        raise UnknownRevision(message + " (or set MIGRATE_UNKNOWN_REVISION=ignore)")

    if state.is_empty:
        pending = _pending(script, (), targets)
        if empty_database == "create_all":
            return MigrationPlan(
                "created", None, to_revision, pending, create_all=True, target_revisions=targets
            )
        return MigrationPlan("upgraded", None, to_revision, pending, target_revisions=targets)

    pending = _pending(script, state.revisions, targets)
    if not pending:
        return MigrationPlan("noop", current, current, target_revisions=targets)
    return MigrationPlan("upgraded", current, to_revision, pending, target_revisions=targets)


def _pending(
    script: ScriptDirectory, current: tuple[str, ...], targets: tuple[str, ...]
) -> tuple[str, ...]:
    """Revisions below ``targets`` not yet below ``current``, oldest first."""
    if at_target(current, targets):
        return ()
    try:
        done = set(ancestry(script, current))
        wanted = ancestry(script, targets)
    except RangeNotAncestorError:  # pragma: no cover - iterate to base never raises this
        return ()
    return tuple(reversed([r for r in wanted if r not in done]))
