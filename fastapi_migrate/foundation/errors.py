"""The errors fastapi-migrate raises: one family, so callers catch ``MigrationError`` once."""

from __future__ import annotations


class MigrationError(Exception):
    """Base class: the database could not be brought to the target revision."""


class ConfigurationError(MigrationError, ValueError):
    """A setting, the script folder or the metadata is wrong; nothing was touched."""


class DatabaseUnavailable(MigrationError):
    """The database could not be reached within ``connect_timeout``."""


class LockTimeout(MigrationError):
    """Another process held the migration lock (or kept the database behind) too long."""


class LockLost(MigrationError):
    """The migration lock went away while migrating (its connection was closed by a server,
    pooler or network): nothing more was committed, and the migration stopped."""


class UnsafeMigration(MigrationError):
    """``MIGRATE_UNSAFE=refuse``: a revision to apply has unsuppressed lint findings; raised
    before any DDL, the database untouched."""


class UnknownRevision(MigrationError):
    """The database is at a revision the scripts do not know (newer code was rolled back)."""


class MultipleHeads(MigrationError):
    """The scripts have several heads and the target is ``head``."""


class UnversionedDatabase(MigrationError):
    """The database has tables but no version table, and no baseline was given."""


class PendingMigrations(MigrationError):
    """``check`` mode: the database is not at the target revision."""


class MigrationFailed(MigrationError):
    """A revision raised; says which one, and where the database was left."""

    def __init__(self, message: str, *, revision: str | None, current_revision: str | None):
        super().__init__(message)
        self.revision = revision
        self.current_revision = current_revision
