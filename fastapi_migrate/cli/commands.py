"""The subcommands of ``fastapi-migrate``: one table of names, arguments and functions.

Each function takes an ``Invocation`` (the parsed command line) and returns an exit code; it
raises the ``MigrationError`` family or Alembic's ``CommandError``, which ``cli.main`` turns into
one line on stderr. The work itself is Alembic's ``command`` functions and the core (``migrate``
and its planning, ``VersionTable``, ``migration_lock``). With ``MIGRATE_TREES``, ``current`` and
``check`` cover every tree; the commands that act on one tree take ``--tree NAME``.

What only some commands need (the engine, the lock, the schema comparison) is imported in them:
every command pays for what is imported here, and ``lint`` is timed against ``alembic upgrade
--sql``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError

from ..backends import backend_for
from ..backends.drivers import parse_url
from ..engine.plan import format_revisions, plan_migration
from ..engine.version_table import DatabaseState, VersionTable, read_states
from ..foundation.errors import (
    ConfigurationError,
    MigrationError,
    MigrationFailed,
    MultipleHeads,
    UnknownRevision,
    UnversionedDatabase,
)
from ..foundation.redaction import error_line
from ..foundation.settings import MigrateSettings, url_optional
from ..glue.config import alembic_config, declares_tool_alembic, load_scripts
from ..glue.logging_guard import preserved_logging

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from ..backends.database import Database

AlembicCall = Callable[[Config, argparse.Namespace], object]


@dataclass
class Invocation:
    """The parsed command line, and every settings object it produced (their URLs get masked)."""

    args: argparse.Namespace
    seen: list[MigrateSettings] = field(default_factory=list)

    def settings(self, **overrides: Any) -> MigrateSettings:
        """``MigrateSettings`` from the environment, ``.env`` and the flags; a missing URL is
        only an error for the commands that connect (``require_url``)."""
        a = self.args
        if a.config is not None:
            overrides["config"] = Path(a.config)
        if a.database_url is not None:  # the database to work on, for reads and DDL alike
            overrides["database_url"] = overrides["migrate_database_url"] = a.database_url
        if a.metadata is not None:
            overrides["metadata"] = a.metadata
        with url_optional():
            settings = MigrateSettings(**overrides)
        self.seen.append(settings)
        return settings

    def tree_settings(
        self, command: str, **overrides: Any
    ) -> tuple[MigrateSettings, MigrateSettings]:
        """The app's settings (the lock is theirs) and those of the tree ``--tree`` picks."""
        settings = self.settings(**overrides)
        return settings, settings.one_tree(getattr(self.args, "tree", None), command)

    def urls(self) -> list[str | None]:
        """Every URL this run may have seen, for masking what it prints."""
        found = [self.args.database_url, *(os.environ.get(n) for n in _URL_VARIABLES)]
        for s in self.seen:
            found += [s.database_url, s.migrate_database_url]
        return found


_URL_VARIABLES = ("DATABASE_URL", "MIGRATE_DATABASE_URL")


# -- shared steps --------------------------------------------------------------------------------


def require_url(settings: MigrateSettings, *, write: bool) -> str:
    """The URL to connect to (``MIGRATE_DATABASE_URL`` first when writing), or exit 2."""
    url = settings.ddl_url if write else (settings.database_url or settings.ddl_url)
    if url is None:
        raise ConfigurationError(
            "DATABASE_URL: no database URL; set DATABASE_URL (or pass --database-url, or "
            "sqlalchemy.url in alembic.ini)"
        )
    return url


def scripts(settings: MigrateSettings) -> tuple[Config, ScriptDirectory]:
    """The Alembic Config and the revision graph; a broken folder is a configuration error."""
    cfg = alembic_config(settings)
    return cfg, load_scripts(cfg)


@contextmanager
def database(settings: MigrateSettings, *, write: bool) -> Iterator[Database]:
    """The database, reached with the same retry and backoff as a starting app."""
    from ..backends.database import Database

    variable = "MIGRATE_DATABASE_URL" if write and settings.migrate_database_url else "DATABASE_URL"
    db = Database(require_url(settings, write=write), variable=variable)
    try:
        db.wait_until_reachable(settings.connect_timeout)
        yield db
    finally:
        db.dispose()


def table_of(settings: MigrateSettings) -> VersionTable:
    return VersionTable(settings.version_table, settings.version_table_schema)


def missing_database_file(settings: MigrateSettings) -> Path | None:
    """A database file (SQLite) that does not exist yet: connecting to read it would create it."""
    url = parse_url(require_url(settings, write=False))
    found = backend_for(url.get_backend_name()).database_file(url)
    return found if found is not None and not found.exists() else None


def read_only_states(settings: MigrateSettings) -> list[DatabaseState]:
    """Every tree's state; a SQLite file not made yet is an empty database, left uncreated."""
    trees = [narrowed for _, narrowed in settings.each_tree()]
    if missing_database_file(settings) is not None:
        return [DatabaseState(has_version_table=False, revisions=(), has_tables=False)] * len(trees)
    tables = [table_of(tree) for tree in trees]
    with database(settings, write=False) as db:
        return db.run(lambda c: read_states(c, tables, adoptable=[False] * len(tables)))


def _revisions_text(revisions: tuple[str, ...]) -> str:
    return format_revisions(revisions) or "base"


# -- offline (--sql) -----------------------------------------------------------------------------


def offline(inv: Invocation, direction: str, revision: str | None) -> int:
    """Print the SQL of ``upgrade``/``downgrade`` from where the database is now; the database
    is only read. ``START:END`` skips reading it."""
    _, settings = inv.tree_settings(f"{direction} --sql")
    revision = revision or settings.target
    require_url(settings, write=True)  # offline mode still needs the dialect
    cfg, script = scripts(settings)
    if ":" not in revision:
        state = read_only_states(settings.one_tree(None, direction))[0]
        start = _offline_start(direction, state, script, revision, settings)
        if start is None:
            return 0
        if start != "base":
            revision = f"{start}:{revision}"
    run = command.upgrade if direction == "upgrade" else command.downgrade
    with preserved_logging():
        run(cfg, revision, sql=True)
    return 0


def _offline_start(
    direction: str,
    state: DatabaseState,
    script: ScriptDirectory,
    revision: str,
    settings: MigrateSettings,
) -> str | None:
    """The revision the SQL starts from, or ``None`` (with a note) when there is nothing to do."""
    if direction == "upgrade":
        plan = plan_migration(state, script, target=revision, baseline=settings.baseline)
        if plan.baseline is not None:
            raise UnversionedDatabase(
                "the database has no version table: stamp it first (fastapi-migrate stamp "
                f"{plan.baseline}), or give the range: upgrade {plan.baseline}:{revision} --sql"
            )
        if plan.action == "noop":
            print(f"-- nothing to do: the database is at {plan.from_revision}", file=sys.stderr)
            return None
    elif not state.revisions:
        print("-- nothing to downgrade: the database has no revision", file=sys.stderr)
        return None
    if len(state.revisions) > 1:
        raise ConfigurationError(
            f"the database is at several revisions ({', '.join(state.revisions)}); --sql "
            f"starts from one: give the range, e.g. {direction} {state.revisions[0]}:{revision}"
        )
    return state.revisions[0] if state.revisions else "base"


# -- the commands --------------------------------------------------------------------------------


def upgrade(inv: Invocation) -> int:
    """Exactly the startup path: lock, baseline, empty database, unknown revision, heads."""
    from ..engine.start import migrate
    from ..foundation import progress

    a = inv.args
    if a.sql:
        return offline(inv, "upgrade", a.revision)
    if getattr(a, "tree", None) is not None:
        raise ConfigurationError(
            "upgrade --tree: only with --sql; upgrade migrates every tree, as a starting app does"
        )
    # MIGRATE_MODE is validated as given (a typo fails here too), then set aside: the release
    # job migrates even where the app runs MIGRATE_MODE=wait.
    overrides: dict[str, Any] = {"mode": "upgrade"}
    if a.revision is not None:
        overrides["target"] = a.revision
    settings = inv.settings().model_copy(update=overrides)
    require_url(settings, write=True)
    try:
        with nullcontext() if a.verbose else progress.printed(sys.stdout):
            result = migrate(settings)
        print(result.summary())
    except ConfigurationError as error:
        # REV came from the command line, not MIGRATE_TARGET: a failure, as for downgrade.
        if a.revision is None or not str(error).startswith("MIGRATE_TARGET: "):
            raise
        reason = str(error).removeprefix("MIGRATE_TARGET: ")
        raise CommandError(f"upgrade {a.revision}: {reason}") from None
    return 0


def change(verb: str, call: AlembicCall) -> Callable[[Invocation], int]:
    """A command that writes (``downgrade``, ``stamp``): under the migration lock, on our
    connection; says where the database went, or where a failure left it."""

    def run(inv: Invocation) -> int:
        from ..engine.lock import guarded_commits, migration_lock
        from ..glue.run import run_on_connection

        a = inv.args
        if getattr(a, "sql", False):
            return offline(inv, "downgrade", a.revision)
        app, settings = inv.tree_settings(a.command)
        scripts(settings)
        table = table_of(settings)
        started = time.monotonic()
        with (
            database(settings, write=True) as db,
            migration_lock(  # the app's lock, whichever tree: every migrator excludes the others
                db,
                version_table=app.version_table,
                version_table_schema=app.version_table_schema,
                timeout=app.lock_timeout,
                enabled=app.lock,
            ) as keeper,
        ):
            before = db.run(table.read_if_present)
            try:
                with (
                    guarded_commits(keeper, db.backend.transactional_ddl),
                    db.connection() as connection,
                ):
                    run_on_connection(settings, connection, lambda cfg: call(cfg, a))
            except (MigrationError, CommandError):
                raise
            except Exception as error:
                left = _revisions_text(db.run(table.read_if_present))
                raise MigrationFailed(
                    f"{a.command} {a.revision} failed: {error_line(error, [db.url])}; the "
                    f"database is left at {left}",
                    revision=None,
                    current_revision=left,
                ) from error
            after = db.run(table.read_if_present)
        print(
            f"{verb}: from {_revisions_text(before)} to {_revisions_text(after)} "
            f"in {time.monotonic() - started:.3f}s"
        )
        return 0

    return run


def listing(call: AlembicCall) -> Callable[[Invocation], int]:
    """A command that only reads the scripts (``history``, ``heads``): no database needed."""

    def run(inv: Invocation) -> int:
        settings = inv.settings()
        trees: list[tuple[str | None, MigrateSettings]]
        if inv.args.tree is not None or not settings.trees:
            trees = [(None, settings.one_tree(inv.args.tree, inv.args.command))]
        else:
            trees = settings.each_tree()
        for name, narrowed in trees:
            if name is not None:
                print(f"# migration tree {name}")
            cfg, _ = scripts(narrowed)
            with preserved_logging():  # revision_environment = true runs env.py here too
                call(cfg, inv.args)
        return 0

    return run


def lint(inv: Invocation) -> int:
    """The findings of the pending revisions (or of ``A:B``); exit 1 when one counts."""
    from .lint_command import run_lint

    _, settings = inv.tree_settings("lint")
    return run_lint(settings, inv.args.rev_range, inv.args.format)


def current(inv: Invocation) -> int:
    """Every tree's revisions, marked ``(head)``; writes nothing, even on an empty database."""
    settings = inv.settings()
    trees = settings.each_tree()
    states = read_only_states(settings)
    for (name, narrowed), state in zip(trees, states, strict=True):
        prefix = "" if name is None else f"{name}: "
        _, script = scripts(narrowed)
        if state.is_unversioned:
            print(f"{prefix}base (unversioned: the database has tables but no version table)")
        elif not state.revisions:
            print(prefix + ("base (empty database)" if state.is_empty else "base"))
        for revision in state.revisions:
            try:
                found = script.get_revision(revision)
            except (ResolutionError, CommandError):
                found = None
            if found is None:
                print(
                    f"{prefix}{revision} (unknown to the migration scripts: migrated by newer code)"
                )
            else:
                print(prefix + found.cmd_format(inv.args.verbose))
    return 0


def revision(inv: Invocation) -> int:
    """A new revision file; ``--autogenerate`` compares the models with the database."""
    from ..foundation.metadata import resolve_metadata
    from ..glue.run import run_on_connection

    a = inv.args
    if a.merge and a.autogenerate:
        raise ConfigurationError("revision: --merge and --autogenerate do not go together")
    _, settings = inv.tree_settings("revision")
    cfg, _ = scripts(settings)

    def make(cfg: Config) -> None:
        if a.merge:
            command.merge(cfg, "heads", message=a.message, rev_id=a.rev_id)
        else:
            command.revision(cfg, message=a.message, autogenerate=a.autogenerate, rev_id=a.rev_id)

    if not a.autogenerate:
        with preserved_logging():
            make(cfg)
        return 0
    metadata = resolve_metadata(None, settings.metadata)
    with database(settings, write=False) as db, db.connection() as connection:
        try:
            run_on_connection(settings, connection, make, metadata)
        except CommandError as error:
            if "MetaData" in str(error):
                raise ConfigurationError(
                    "revision --autogenerate needs the models: set "
                    "MIGRATE_METADATA=app.models:Base.metadata or pass --metadata"
                ) from None
            raise
    return 0


def _database_problems(
    settings: MigrateSettings, metadata: MetaData | None
) -> tuple[list[str], str]:
    """What ``check`` finds wrong with the database, planned as a starting app plans it
    (baseline, unknown revision, several heads), and the revisions it compared against."""
    from ..engine.start import Start
    from ..glue.schema_diff import schema_differences

    with Start(settings.model_copy(update={"mode": "check"}), metadata) as start:
        start.db.wait_until_reachable(settings.connect_timeout)
        try:
            plans = start.plans(start.db.run)
        except (UnknownRevision, MultipleHeads, UnversionedDatabase) as error:
            return [str(error)], "?"
        at = ",".join(plan.to_revision or "base" for plan in plans)
        if any(plan.action != "noop" for plan in plans):
            return [f"{start.behind(plans)}; run: fastapi-migrate upgrade"], at
        if metadata is None:
            return [], at
        tables = [table_of(narrowed).name for _, narrowed in settings.each_tree()]
        differences = start.db.run(
            lambda c: schema_differences(
                c,
                metadata,
                version_tables=tables,
                version_table_schema=settings.version_table_schema,
            )
        )
    return [f"the models differ from the database: {d}" for d in differences], at


def check(inv: Invocation) -> int:
    """Exit 1, saying what differs, unless every tree is at its target and the database
    matches the models."""
    from ..foundation.metadata import resolve_metadata

    settings = inv.settings()
    for _, narrowed in settings.each_tree():
        scripts(narrowed)
    metadata = resolve_metadata(None, settings.metadata)
    missing = missing_database_file(settings)
    if missing is not None:
        problems = [f"the database file {missing} does not exist; run: fastapi-migrate upgrade"]
        at = "?"
    else:
        problems, at = _database_problems(settings, metadata)
    if problems:
        for problem in problems:
            print(f"- {problem}")
        print(
            f"fastapi-migrate: check failed: {len(problems)} problem(s), listed above",
            file=sys.stderr,
        )
        return 1
    if metadata is None:
        models = "models not compared (set MIGRATE_METADATA or pass --metadata)"
    else:
        count = len(metadata.tables)
        models = f"the models match it ({count} table{'' if count == 1 else 's'})"
    print(f"ok: the database is at {settings.target} ({at}); {models}")
    return 0


_INI = """\
# Written by `fastapi-migrate init`, so that the plain `alembic` command works too.
# The database URL comes from DATABASE_URL (fastapi-migrate's settings), not from this file.
# No logging sections: Alembic never reconfigures the app's logging.
[alembic]
script_location = %(here)s/{location}
prepend_sys_path = .
path_separator = os
"""


_TOOL_ALEMBIC = """
[tool.alembic]
# Written by `fastapi-migrate init --pyproject`: Alembic 1.16+ reads this table, and so does
# fastapi-migrate. The database URL comes from DATABASE_URL (fastapi-migrate's settings).
script_location = "%(here)s/{location}"
prepend_sys_path = ["."]
"""


def _pyproject_ready(pyproject: Path) -> None:
    """Refuse a pyproject.toml that already configures Alembic, or an Alembic that cannot read
    one, before anything is written."""
    if not hasattr(Config, "get_alembic_option"):
        import alembic

        raise ConfigurationError(
            f"init --pyproject: Alembic {alembic.__version__} does not read pyproject.toml "
            "(1.16 or later does): upgrade Alembic, or use init --ini"
        )
    if pyproject.exists() and declares_tool_alembic(pyproject):
        raise ConfigurationError(
            f"{pyproject.resolve()} already has a [tool.alembic] table; not overwriting it"
        )


def init(inv: Invocation) -> int:
    """Scaffold a migrations folder whose ``env.py`` needs no editing (and an alembic.ini, or
    a ``[tool.alembic]`` table in pyproject.toml)."""
    a = inv.args
    if a.ini and a.pyproject:
        raise ConfigurationError("init: --ini and --pyproject do not go together; pick one")
    location = a.directory or inv.settings().script_location or "migrations"
    if ":" in location and not Path(location).is_absolute():
        raise ConfigurationError(
            f"MIGRATE_SCRIPT_LOCATION: {location!r} is a package path; give the folder: "
            "fastapi-migrate init DIR"
        )
    directory = Path(location)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigurationError(f"{directory}/ exists and is not empty; not overwriting it")
    ini, pyproject = Path("alembic.ini"), Path("pyproject.toml")
    if a.ini and ini.exists():
        raise ConfigurationError(f"{ini.resolve()} exists; not overwriting it")
    if a.pyproject:
        _pyproject_ready(pyproject)
    (directory / "versions").mkdir(parents=True, exist_ok=True)
    template = files("fastapi_migrate") / "templates" / "fastapi"
    for item in template.iterdir():
        if item.is_file() and not item.name.startswith((".", "__")):
            (directory / item.name).write_bytes(item.read_bytes())
    print(f"created {directory}/ (env.py, script.py.mako, README, versions/)")
    if a.ini:
        relative = os.path.relpath(directory.resolve(), ini.resolve().parent)
        ini.write_text(_INI.format(location=Path(relative).as_posix().replace("%", "%%")))
        print(f"created {ini} (script_location = {relative}; no URL: DATABASE_URL is used)")
    if a.pyproject:
        relative = os.path.relpath(directory.resolve(), pyproject.resolve().parent)
        location = Path(relative).as_posix().replace("%", "%%")
        before = pyproject.read_text() if pyproject.exists() else ""
        separator = "" if not before or before.endswith("\n") else "\n"
        pyproject.write_text(before + separator + _TOOL_ALEMBIC.format(location=location))
        verb = "added [tool.alembic] to" if before else "created"
        print(f"{verb} {pyproject} (script_location = {relative}; no URL: DATABASE_URL is used)")
    print(
        "next: set DATABASE_URL and MIGRATE_METADATA=app.models:Base.metadata, then run "
        'fastapi-migrate revision --autogenerate -m "first"'
    )
    return 0


# -- the table -----------------------------------------------------------------------------------

Argument = tuple[tuple[str, ...], dict[str, Any]]


def arg(*flags: str, **options: Any) -> Argument:
    return flags, options


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, arguments, and the function that runs it."""

    name: str
    summary: str
    run: Callable[[Invocation], int]
    arguments: tuple[Argument, ...] = ()
    description: str = ""


_TREE = arg(
    "--tree",
    metavar="NAME",
    help="the migration tree to work on, by name (required when MIGRATE_TREES has several)",
)
_SQL = arg(
    "--sql",
    action="store_true",
    help="print the SQL (Alembic offline mode) from the database's revision, for a DBA; "
    "changes nothing",
)

COMMANDS: tuple[Command, ...] = (
    Command(
        "init",
        "write a migrations folder whose env.py needs no editing",
        init,
        (
            arg(
                "directory",
                nargs="?",
                metavar="DIR",
                help="default: MIGRATE_SCRIPT_LOCATION, else migrations",
            ),
            arg("--ini", action="store_true", help="also write an alembic.ini for `alembic`"),
            arg(
                "--pyproject",
                action="store_true",
                help="also add a [tool.alembic] table to pyproject.toml (Alembic 1.16+), for "
                "`alembic`, instead of an alembic.ini",
            ),
        ),
        "Write DIR/env.py (URL and models from the settings; batch mode and transactional DDL "
        "on SQLite; async drivers; logging left alone), script.py.mako and versions/. Refuses "
        "a folder that is not empty.",
    ),
    Command(
        "upgrade",
        "bring the database to REV (default: head), exactly as a starting app does",
        upgrade,
        (
            arg("revision", nargs="?", metavar="REV", help="default: MIGRATE_TARGET (head)"),
            _SQL,
            _TREE,
        ),
        "Run the startup logic: connect with retries, take the migration lock, then upgrade, "
        "adopt (MIGRATE_BASELINE) or create (MIGRATE_EMPTY_DATABASE); refuses an unknown "
        "revision or several heads. Prints the one-line summary. MIGRATE_MODE is ignored.",
    ),
    Command(
        "downgrade",
        "downgrade the database to REV, under the migration lock",
        change("downgraded", lambda cfg, a: command.downgrade(cfg, a.revision)),
        (arg("revision", metavar="REV", help="a revision, -1, or base"), _SQL, _TREE),
    ),
    Command(
        "lint",
        "check the pending revisions (or A:B) for what they do to a live database",
        lint,
        (
            arg(
                "rev_range",
                nargs="?",
                metavar="A:B",
                help="a range (base:head, RELEASED:head); default: what is pending on the "
                "database (every revision when it cannot be reached)",
            ),
            arg("--format", choices=("text", "json"), default="text", help="default: text"),
            _TREE,
        ),
        description="Each revision is rendered on its own, as it will execute (raw op.execute "
        "SQL, autocommit_block and batch mode included), and checked against the tables that "
        "exist before it: locks, scans, rewrites, breaking changes. Exit 1 when a finding is "
        "not allowed in its file (# fastapi-migrate: allow RULE -- REASON), 0 when none, 2 for "
        "bad usage.",
    ),
    Command(
        "current",
        "show the database's revision (creates nothing)",
        current,
    ),
    Command(
        "history",
        "list the revisions, newest first (no database needed)",
        listing(lambda cfg, a: command.history(cfg, rev_range=a.rev_range, verbose=a.verbose)),
        (arg("-r", "--rev-range", metavar="RANGE", help="e.g. r1:head, -3:current"), _TREE),
    ),
    Command(
        "heads",
        "show the head revisions of the scripts (no database needed)",
        listing(lambda cfg, a: command.heads(cfg, verbose=a.verbose)),
        (_TREE,),
    ),
    Command(
        "stamp",
        "write REV into the version table without migrating, under the migration lock",
        change("stamped", lambda cfg, a: command.stamp(cfg, a.revision)),
        (arg("revision", metavar="REV", help="a revision, head, or base"), _TREE),
    ),
    Command(
        "revision",
        "write a new revision file",
        revision,
        (
            arg("-m", "--message", required=True, help="what the revision does"),
            arg(
                "--autogenerate",
                action="store_true",
                help="fill it by comparing the models (MIGRATE_METADATA) with the database",
            ),
            arg("--merge", action="store_true", help="merge the current heads into one"),
            arg("--rev-id", metavar="ID", help="the revision id (default: generated)"),
            _TREE,
        ),
    ),
    Command(
        "check",
        "exit 1 unless the database is at head and matches the models (for CI)",
        check,
        description="Exit 0 when the database is at MIGRATE_TARGET (head) and, when the models "
        "are known (MIGRATE_METADATA or --metadata), Alembic's autogenerate finds no "
        "difference; else exit 1 and list what differs.",
    ),
)
