"""Name a revision that an earlier, interrupted start left half-applied on MySQL/MariaDB.

MySQL and MariaDB commit every DDL statement, so a migrator killed inside a revision leaves
that revision's first statements in place while the version table still names the revision
before it. The next start runs the revision again and its first statement fails because its
object already exists. That combination (the first revision of this start, failing on an
object that already exists) is what this module recognizes, to say what happened and what to do.
"""

from __future__ import annotations

# MySQL/MariaDB error numbers for "it is already there" (or, for a DROP, "already gone").
_ALREADY_DONE = {
    1050,  # ER_TABLE_EXISTS_ERROR
    1051,  # ER_BAD_TABLE_ERROR (DROP TABLE of a table already dropped)
    1060,  # ER_DUP_FIELDNAME
    1061,  # ER_DUP_KEYNAME
    1068,  # ER_MULTIPLE_PRI_KEY
    1091,  # ER_CANT_DROP_FIELD_OR_KEY
    1826,  # ER_FK_DUP_NAME
}


def _mysql_error_number(error: BaseException) -> int | None:
    """The server's error number of a DBAPI error (SQLAlchemy wraps it in ``.orig``)."""
    original = getattr(error, "orig", None) or error
    args = getattr(original, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def half_applied_hint(
    error: BaseException,
    *,
    dialect: str,
    failed: str | None,
    first_pending: str | None,
    left_at: str | None,
) -> str | None:
    """The hint for a revision an earlier start left half-applied, or ``None``."""
    if dialect not in ("mysql", "mariadb") or failed is None or failed != first_pending:
        return None
    if _mysql_error_number(error) not in _ALREADY_DONE:
        return None
    before = left_at or "no revision"
    return (
        f"; revision {failed} looks half-applied by an earlier start that stopped inside it "
        "(MySQL/MariaDB commit each DDL statement, so its first statements stayed while the "
        f"version table still says {before}): undo what it did, then start again; or finish "
        f"its remaining statements by hand and run `fastapi-migrate stamp {failed}`"
    )
