"""``MigrateSettings``: one place that reads the environment, ``.env`` and Alembic's config files
(alembic.ini, and pyproject.toml's ``[tool.alembic]`` since Alembic 1.16)."""

from __future__ import annotations

import configparser
import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from alembic.config import Config
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigurationError
from .identifiers import IDENTIFIER_LIMITS
from .redaction import mask_secrets, mask_url
from .trees import MigrationTree, check_trees

Mode = Literal["upgrade", "wait", "check", "off"]
EmptyDatabaseStrategy = Literal["upgrade", "create_all"]
UnknownRevisionPolicy = Literal["error", "ignore"]
UnsafePolicy = Literal["warn", "refuse", "allow"]
# ``True``: the session lock where it can be trusted, else the lease; ``"lease"``: always the
# lease in a table; ``False``: no lock.
LockChoice = bool | Literal["lease"]

# \Z, not $: "abc\n" must not pass (a $ matches before a trailing newline).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
# Alembic names the version table's primary key "<table>_pkc".
_PK_SUFFIX = "_pkc"
# Seconds: PyMySQL's connect_timeout and MySQL's lock_wait_timeout stop at a year; longer
# waits overflow time_t in the lock's sleeps.
_YEAR = 31_536_000
# PostgreSQL's lock_timeout is an int of milliseconds.
_PG_LOCK_TIMEOUT_MAX = 2_147_483
_URL_FIELDS = ("database_url", "migrate_database_url")
# Commands that never connect (``init``, ``revision`` without autogenerate) need no URL.
_url_required: ContextVar[bool] = ContextVar("fastapi_migrate_url_required", default=True)


@contextlib.contextmanager
def url_optional() -> Iterator[None]:
    """Within this block, settings without a database URL are valid."""
    token = _url_required.set(False)
    try:
        yield
    finally:
        _url_required.reset(token)


def _env(name: str) -> Any:
    """Accept the field name (Python) and the environment variable (deployments)."""
    return Field(default=None, validation_alias=AliasChoices(name.lower(), name))


class MigrateSettings(BaseSettings):
    """Every knob of fastapi-migrate; each field reads the environment variable in its docs."""

    model_config = SettingsConfigDict(
        env_prefix="MIGRATE_",
        env_file=".env",
        # MIGRATE_CONFIG= is how docker compose and Kubernetes write an unset value.
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("database_url", "DATABASE_URL")
    )
    migrate_database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("migrate_database_url", "MIGRATE_DATABASE_URL"),
    )
    config: Path | None = None
    script_location: str | None = None
    mode: Mode = "upgrade"
    target: str = "head"
    empty_database: EmptyDatabaseStrategy = "upgrade"
    baseline: str | None = None
    metadata: str | None = None
    lock_timeout: float = Field(default=300.0, ge=0, le=_YEAR, allow_inf_nan=False)
    connect_timeout: float = Field(default=30.0, ge=0, le=_YEAR, allow_inf_nan=False)
    unknown_revision: UnknownRevisionPolicy = "error"
    version_table: str = "alembic_version"
    version_table_schema: str | None = None
    backup_dir: Path | None = None
    # Seconds a DDL statement may wait for a table lock (PostgreSQL lock_timeout, MySQL
    # lock_wait_timeout) before the migration fails instead of stalling every query behind it.
    ddl_lock_timeout: float = Field(
        default=10.0, ge=0, le=_PG_LOCK_TIMEOUT_MAX, allow_inf_nan=False
    )
    # After a DDL lock timeout: roll the revision back, wait with backoff, try again (0: fail).
    ddl_lock_retries: int = Field(default=5, ge=0, le=100)
    # Lint findings in the revisions a start applies: log them, refuse the start, or skip the check.
    unsafe: UnsafePolicy = "warn"
    # Below this many estimated rows a lock or scan finding is fine at that size.
    unsafe_max_rows: int | None = Field(default=None, ge=0)
    # ``module:function`` called with a Connection after the migration, under the lock.
    seed: str | None = None
    lock: LockChoice = True
    # Several packages' migrations, each with its own version table, in this order (JSON in
    # MIGRATE_TREES); empty: the one tree of script_location and version_table.
    trees: list[MigrationTree] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources, less a ``.env`` source with no file to read: it would
        still make a pass over every field, on every start (a third of the settings' cost)."""
        env_file = getattr(dotenv_settings, "env_file", None)
        files = [env_file] if isinstance(env_file, str | Path) else list(env_file or ())
        if any(Path(file).expanduser().is_file() for file in files):
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        return init_settings, env_settings, file_secret_settings

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_explain(exc)) from None
        except SettingsError as exc:  # a list setting that is not JSON
            raise ConfigurationError(
                f"invalid settings: {exc}: MIGRATE_TREES is JSON, e.g. "
                '[{"script_location": "auth/migrations", "version_table": "auth_version"}]'
            ) from None

    @field_validator("version_table", "version_table_schema")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a plain SQL identifier (letters, digits, _; at most 63)"
            )
        return value

    @field_validator("config", mode="before")
    @classmethod
    def _config_file(cls, value: Any) -> Any:
        """Checked as given: ``Path`` would show ``conf/`` as ``conf``, and ``""`` as ``.``."""
        if value is None or value == "":
            return None
        if not isinstance(value, str | Path):
            return value  # pydantic's own type error
        try:
            found = Path(value).is_file()
        except OSError as error:  # a name too long for the file system, ...
            raise ValueError(f"cannot be read: {error.strerror}") from None
        if not found:
            raise ValueError(
                "not a file: give the path of an alembic.ini, or of a pyproject.toml with a "
                "[tool.alembic] table"
            )
        return value

    @field_validator("target")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty; use 'head'")
        return value.strip()

    @model_validator(mode="after")
    def _defaults_from_alembic_ini(self) -> MigrateSettings:
        if self.config is None:
            self.config = next((p for p in (_INI, _PYPROJECT) if p.is_file()), None)
        ini = self.config_files()[0]
        if self.database_url is None and ini is not None:
            self.database_url = _ini_url(ini)
        if self.database_url is None and self.mode != "off" and _url_required.get():
            raise ValueError(
                "DATABASE_URL: no database URL; set DATABASE_URL "
                "(or sqlalchemy.url in alembic.ini, or MigrateSettings(database_url=...))"
            )
        return self

    @model_validator(mode="after")
    def _names_fit_the_database(self) -> MigrateSettings:
        """Names the database would cut or refuse at the first revision, refused now."""
        limit = _identifier_limit(self.ddl_url)
        if limit is None:
            return self
        tables = [("MIGRATE_VERSION_TABLE", self.version_table)]
        tables += [("MIGRATE_TREES", tree.version_table) for tree in self.trees]
        for variable, name in tables:
            if len(name) + len(_PK_SUFFIX) > limit:
                raise ValueError(
                    f"{variable}: {name!r} has {len(name)} characters; at most "
                    f"{limit - len(_PK_SUFFIX)} work on this database (Alembic names the "
                    f"table's primary key {name}{_PK_SUFFIX}, and names have at most {limit})"
                )
        schema = self.version_table_schema
        if schema is not None and len(schema) > limit:
            raise ValueError(
                f"MIGRATE_VERSION_TABLE_SCHEMA: {schema!r} has {len(schema)} characters; "
                f"names have at most {limit} on this database"
            )
        return self

    @model_validator(mode="after")
    def _trees_fit(self) -> MigrateSettings:
        check_trees(self.trees, empty_database=self.empty_database, baseline=self.baseline)
        return self

    def for_tree(self, tree: MigrationTree) -> MigrateSettings:
        """These settings narrowed to one tree: its folder, version table, target, baseline."""
        return self.model_copy(
            update={
                "script_location": tree.script_location,
                "version_table": tree.version_table,
                "target": tree.target or self.target,
                "baseline": tree.baseline,
                "trees": [],
            }
        )

    def each_tree(self) -> list[tuple[str | None, MigrateSettings]]:
        """Every tree's name and narrowed settings; one unnamed entry without ``MIGRATE_TREES``."""
        if not self.trees:
            return [(None, self)]
        return [(tree.name, self.for_tree(tree)) for tree in self.trees]

    def one_tree(self, name: str | None, command: str) -> MigrateSettings:
        """The settings of the tree ``--tree NAME`` picks, for a command that works on one."""
        names = [tree.name for tree in self.trees]
        if not self.trees:
            if name is not None:
                raise ConfigurationError(f"{command} --tree {name}: MIGRATE_TREES is not set")
            return self
        if name is None or name not in names:
            given = "is required" if name is None else f"{name!r} is not one of them"
            raise ConfigurationError(
                f"{command}: MIGRATE_TREES has several trees ({', '.join(names)}): --tree NAME "
                f"{given}"
            )
        return self.for_tree(self.trees[names.index(name)])

    def config_files(self) -> tuple[Path | None, Path | None]:
        """The alembic.ini and the pyproject.toml to read, either may be None: the file
        ``config`` names (a pyproject.toml by its name, as Alembic decides), and the other one
        beside it, else in the working directory (where Alembic's command line looks)."""
        if self.config is None:
            return None, None
        if self.config.name == _PYPROJECT.name:
            return _companion(self.config, _INI), self.config
        return self.config, _companion(self.config, _PYPROJECT)

    @property
    def ddl_url(self) -> str | None:
        """The URL migrations run with: ``MIGRATE_DATABASE_URL``, else ``DATABASE_URL``."""
        return self.migrate_database_url or self.database_url

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (mask_url(value) if name in _URL_FIELDS and value else value)


def _ini_url(ini: Path) -> str | None:
    """alembic.ini's ``sqlalchemy.url``. configparser reads ``%`` as interpolation, and its
    error quotes the rest of the value (a %-encoded password): name the option, never the value.
    """
    try:
        return Config(str(ini)).get_main_option("sqlalchemy.url") or None
    except configparser.InterpolationError as error:
        raise ValueError(
            f"{ini}: [{error.section}] {error.option} holds a '%' that configparser reads as "
            "interpolation: write each '%' in it as '%%' (a password's %40 as %%40), or set "
            "DATABASE_URL instead"
        ) from None


def _identifier_limit(url: str | None) -> int | None:
    """The longest name the URL's database takes; None when unknown (a bad URL is reported
    where it is parsed, with its own message)."""
    if not url:
        return None
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        return None
    return IDENTIFIER_LIMITS.get(backend)


_INI = Path("alembic.ini")
_PYPROJECT = Path("pyproject.toml")


def _companion(config: Path, name: Path) -> Path | None:
    for candidate in (config.parent / name, name):
        if candidate.is_file():
            return candidate
    return None


_ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "migrate_database_url": "MIGRATE_DATABASE_URL",
}


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return _ENV_NAMES.get(field, f"MIGRATE_{field.upper()}")


# Settings whose valid values are several kinds at once: what to write, said once.
_CHOICES = {
    "lock": "expected true (the session lock where it can be trusted, else a lease in a table), "
    "lease or false",
}


def _explain(exc: ValidationError) -> str:
    """One line per bad setting, naming its variable and never echoing a URL."""
    lines = []
    seen: set[str] = set()
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field and field in seen:  # a union (MIGRATE_LOCK) fails once per member: say it once
            continue
        seen.add(field)
        ctx_error = error.get("ctx", {}).get("error")
        message = str(ctx_error) if ctx_error is not None else error["msg"]
        message = _CHOICES.get(field, message)
        if not field:
            lines.append(message)  # raised by the model validator: names its own variable
            continue
        name = env_name(field)
        if field in _URL_FIELDS:
            lines.append(f"{name}: {message}")
        else:
            lines.append(f"{name}: {message} (got {error.get('input')!r})")
    # A value echoed back may be a URL typed into the wrong variable: mask what looks secret.
    return mask_secrets("invalid settings: " + "; ".join(lines))
