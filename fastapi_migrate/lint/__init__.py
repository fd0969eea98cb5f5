"""``fastapi-migrate lint`` and ``MIGRATE_UNSAFE``: each pending revision checked, before it
runs, for what it does to a live database (locks, scans, rewrites, breaking changes)."""

from .check import add_sizes, lint, lint_pending
from .findings import Finding, Report
from .rules import RULES

__all__ = ["RULES", "Finding", "Report", "add_sizes", "lint", "lint_pending"]
