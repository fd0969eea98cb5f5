"""A finding, a lint run's report, and how both are printed (one line each, or JSON)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .rules import RULES, Kind
from .tables import Size


@dataclass
class Finding:
    """One rule one revision breaks: where, on which table, what it blocks, the fix."""

    rule: str
    revision: str
    file: str | None
    line: int | None
    table: str | None
    blocks: str
    size: Size | None = None
    allowed: str | None = None  # the reason of the file's ``allow`` comment
    waived: bool = False  # a lock or scan finding below MIGRATE_UNSAFE_MAX_ROWS
    dialect_fix: str | None = None

    @property
    def kind(self) -> Kind:
        return RULES[self.rule].kind

    @property
    def fix(self) -> str:
        return self.dialect_fix or RULES[self.rule].fix

    @property
    def counts(self) -> bool:
        """Whether it stops ``lint`` (exit 1) and ``MIGRATE_UNSAFE=refuse``."""
        return self.allowed is None and not self.waived

    @property
    def message(self) -> str:
        where = f"{self.table.lower()}: " if self.table else ""
        size = f" [{self.size.describe()}]" if self.size is not None else ""
        fine = "; fine at this size (below MIGRATE_UNSAFE_MAX_ROWS)" if self.waived else ""
        return f"{where}{self.blocks}{size}{fine}"

    def location(self) -> str:
        if self.file is None:
            return "?"
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def line_text(self) -> str:
        return f"{self.revision} {self.location()} {self.rule}: {self.message}. Fix: {self.fix}"

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "revision": self.revision,
            "file": self.file,
            "line": self.line,
            "table": self.table.lower() if self.table else None,
            "kind": self.kind,
            "message": self.message,
            "fix": self.fix,
            "rows": self.size.rows if self.size else None,
            "bytes": self.size.bytes if self.size else None,
            "allowed": self.allowed,
            "waived": self.waived,
        }


@dataclass
class Report:
    """What a lint run found, in revision order, and what it could not check."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.counts]

    def summary(self) -> str:
        allowed = sum(f.allowed is not None for f in self.findings)
        waived = sum(f.waived and f.allowed is None for f in self.findings)
        extra = [f"{allowed} allowed"] if allowed else []
        extra += [f"{waived} fine at this size"] if waived else []
        more = f" ({', '.join(extra)})" if extra else ""
        return f"{len(self.blocking)} finding(s) in {len(self.checked)} revision(s) checked{more}"

    def text(self) -> str:
        lines = [f.line_text() for f in self.findings if f.allowed is None]
        return "\n".join([*lines, *(f"note: {n}" for n in self.notes), self.summary()])

    def json(self) -> str:
        return json.dumps([f.as_json() for f in self.findings], indent=2)


def display_path(path: str | None) -> str | None:
    """A revision file's path, relative to the working directory when below it."""
    if path is None:
        return None
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative
