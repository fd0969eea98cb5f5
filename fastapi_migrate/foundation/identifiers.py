"""The longest table or schema name each database takes, by SQLAlchemy's backend name.

Here, below the backends, because the settings check a version table's name against it before
anything connects (exit 2 naming the variable), and the backends declare the same numbers.
"""

from __future__ import annotations

IDENTIFIER_LIMITS: dict[str, int] = {
    "postgresql": 63,  # NAMEDATALEN - 1
    "cockroachdb": 63,
    "mysql": 64,
    "mariadb": 64,
}
"""Databases absent here (SQLite) have no limit that matters."""
