"""The ``fastapi-migrate`` command line (also ``python -m fastapi_migrate``).

argparse over the table in ``commands``. Exit codes: 0 success, 1 failure (lock timeout,
unknown revision, unreachable database, failed migration, check found differences), 2 bad usage
or configuration. An error is one line on stderr, with no password and no traceback unless
``--verbose``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from alembic.util import CommandError

from ..foundation.errors import ConfigurationError, MigrationError
from ..foundation.redaction import error_line, mask_secrets, redact
from .commands import COMMANDS, Invocation

PROG = "fastapi-migrate"
_DEFAULTS = {
    "command": None,
    "config": None,
    "database_url": None,
    "metadata": None,
    "verbose": False,
}


def _version() -> str:
    try:
        return version("fastapi-migrate-on-startup")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: the installed version, read only when asked (reading the package's
    metadata costs every command several milliseconds)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"{parser.prog} {_version()}")  # on stdout, as argparse's own version action
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a usage error masks what looks like a secret in the values it
    echoes (a URL given as a stray argument: ``unrecognized arguments: postgresql://u:pw@...``)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {mask_secrets(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser; the common options work before and after the subcommand."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("settings (default: environment, .env, alembic.ini)")
    # SUPPRESS: an option given before the subcommand is not reset by the subparser's default.
    group.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="alembic.ini, or a pyproject.toml with [tool.alembic] (MIGRATE_CONFIG)",
    )
    group.add_argument(
        "--database-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the database (DATABASE_URL and MIGRATE_DATABASE_URL); prefer the variable, "
        "a password here shows in the process list",
    )
    group.add_argument(
        "--metadata",
        metavar="MODULE:ATTR",
        default=argparse.SUPPRESS,
        help="the models' MetaData, e.g. app.models:Base.metadata (MIGRATE_METADATA)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="more detail: Alembic's log, verbose listings, the traceback of an error",
    )
    parser = _Parser(
        prog=PROG,
        description="Alembic migrations with the settings of fastapi-migrate: the same URL, "
        "lock and startup logic as migrate_on_startup().",
        epilog="exit codes: 0 success, 1 failure, 2 bad usage or configuration. "
        f"Help on a command: {PROG} COMMAND --help",
        parents=[common],
    )
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="show the version and exit"
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for cmd in COMMANDS:
        sub = subcommands.add_parser(
            cmd.name,
            help=cmd.summary,
            description=cmd.description or cmd.summary,
            parents=[common],
        )
        for flags, options in cmd.arguments:
            sub.add_argument(*flags, **options)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version (0) or bad usage (2)
        return done.code if isinstance(done.code, int) else 2
    # Not set_defaults: it would rewrite the default of the actions the subparsers share.
    for name, default in _DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required (see {PROG} --help)", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s [%(name)s] %(message)s"
        )
    invocation = Invocation(args)
    run = {cmd.name: cmd.run for cmd in COMMANDS}[args.command]
    try:
        return run(invocation)
    except KeyboardInterrupt:
        return _fail(invocation, 130, "interrupted", None)
    except ConfigurationError as error:
        return _fail(invocation, 2, " ".join(str(error).split()), error)
    except MigrationError as error:
        return _fail(invocation, 1, " ".join(str(error).split()), error)
    except CommandError as error:  # Alembic: unknown revision, not a valid target...
        return _fail(invocation, 1, error_line(error).removeprefix("CommandError: "), error)
    except Exception as error:
        message = f"{args.command} failed: {error_line(error)}"
        return _fail(invocation, 1, message, error, unexpected=True)


def console() -> int:
    """The ``fastapi-migrate`` command (and ``python -m fastapi_migrate``): ``main``, then the
    process ends. What it made is frozen out of the garbage collector first: the collections
    Python runs as it shuts down would walk every object of SQLAlchemy, Alembic and pydantic
    again, a fifth of a short command's cpu (``lint`` is timed against ``alembic upgrade
    --sql``). Exit handlers (``atexit``, logging's) and the flushing of output run as always;
    what is skipped is finalizing garbage in reference cycles, which Python never promises at
    exit, and which the commands do not leave: they close their connections and files."""
    code = main()
    gc.freeze()
    return code


def _fail(
    invocation: Invocation,
    code: int,
    message: str,
    error: BaseException | None,
    *,
    unexpected: bool = False,
) -> int:
    """One line on stderr (the traceback first with ``--verbose``), every password masked."""
    urls = invocation.urls()
    if error is not None and invocation.args.verbose:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        sys.stderr.write(redact(trace, urls))
    hint = " (--verbose for the traceback)" if unexpected and not invocation.args.verbose else ""
    print(f"{PROG}: error: {redact(message, urls)}{hint}", file=sys.stderr)
    return code
