"""``MigrationResult``: what a start did, kept on ``app.state.migration``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ResultAction = Literal["noop", "upgraded", "created", "adopted", "waited", "skipped"]


@dataclass(frozen=True)
class MigrationResult:
    """``action`` taken, ``from_revision`` and ``to_revision``, ``applied`` oldest first.

    With several migration trees, ``trees`` maps each tree's name to its own result, in the
    order they ran, and the fields above sum them up: the first action other than ``noop``,
    every tree's revisions joined by commas, every applied revision.
    """

    action: ResultAction
    from_revision: str | None
    to_revision: str | None
    applied: list[str] = field(default_factory=list)
    seconds: float = 0.0
    trees: dict[str, MigrationResult] = field(default_factory=dict)

    def summary(self) -> str:
        """The one line logged per start."""
        applied = ",".join(self.applied) if self.applied else "-"
        return (
            f"migration {self.action}: from {self.from_revision or 'base'} "
            f"to {self.to_revision or 'base'}, applied {len(self.applied)} [{applied}] "
            f"in {self.seconds:.3f}s"
        ) + _trees_summary(self.trees)


def _trees_summary(trees: dict[str, MigrationResult]) -> str:
    parts = [
        f"{name} {r.action}" + (f" [{','.join(r.applied)}]" if r.applied else "")
        for name, r in trees.items()
    ]
    return f" (trees: {'; '.join(parts)})" if parts else ""
