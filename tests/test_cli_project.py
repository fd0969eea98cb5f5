"""``fastapi-migrate`` on a project: scaffolding, scripts without a database, errors and exit
codes, and the startup path's refusals (SQLite: the decisions themselves are tested on every
backend elsewhere; here it is what the command line makes of them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from fastapi_migrate.backends.database import Database
from fastapi_migrate.cli import main
from fastapi_migrate.cli.commands import COMMANDS
from fastapi_migrate.engine.lock import migration_lock
from fastapi_migrate.glue.schema_diff import schema_differences

from .cli_helpers import MODULE, cli, console_script, fails, ok
from .progress_helpers import summary_line
from .support import (
    TEMPLATES,
    add_revision,
    current_revisions,
    execute,
    refused_port,
    subprocess_env,
    table_names,
    write_migrations,
)


def test_init_and_scripts_need_no_database(project: Path) -> None:
    """init --ini, revision, history, heads without DATABASE_URL; then the plain `alembic`
    command works with the written alembic.ini and DATABASE_URL."""
    script = (console_script(),)
    out = ok(cli(project, "init", "--ini", program=script)).stdout
    assert "created migrations/" in out and "created alembic.ini" in out
    location = project / "migrations"
    assert (location / "env.py").read_text() == (TEMPLATES / "fastapi" / "env.py").read_text()
    assert (location / "script.py.mako").is_file() and (location / "versions").is_dir()
    ini = (project / "alembic.ini").read_text()
    assert "script_location = %(here)s/migrations" in ini
    assert "sqlalchemy.url" not in ini and "[loggers]" not in ini

    fails(cli(project, "init", program=script), 2, "migrations/ exists and is not empty")

    ok(cli(project, "revision", "-m", "first", "--rev-id", "a1"))
    ok(cli(project, "revision", "-m", "second", "--rev-id", "a2"))
    assert (location / "versions" / "a2_second.py").is_file()
    history = ok(cli(project, "history")).stdout.splitlines()
    assert history == ["a1 -> a2 (head), second", "<base> -> a1, first"]
    assert ok(cli(project, "heads")).stdout.strip() == "a2 (head)"

    add_revision(location, "a3", "a2", table="notes")
    url = f"sqlite:///{project / 'app.db'}"
    env = subprocess_env(DATABASE_URL=url)
    ok(cli(project, "upgrade", "head", env=env, program=(MODULE[0], "-m", "alembic")))
    assert table_names(url) == {"alembic_version", "notes"}
    assert current_revisions(url) == {"a3"}
    assert ok(cli(project, "current", env=env)).stdout.strip() == "a3 (head)"


def test_errors_are_one_line_and_never_show_the_password(project: Path) -> None:
    write_migrations(project, 1)
    fails(cli(project, "upgrade"), 2, "DATABASE_URL: no database URL")
    url = f"sqlite:///{project / 'app.db'}"
    fails(
        cli(project, "upgrade", env=subprocess_env(DATABASE_URL=url, MIGRATE_LOCK_TIMEOUT="soon")),
        2,
        "MIGRATE_LOCK_TIMEOUT",
    )
    fails(cli(project, "--database-url", url, "history", "--config", "nowhere.ini"), 2, "nowhere")
    fails(
        cli(project, "current", env=subprocess_env(DATABASE_URL=url, MIGRATE_SCRIPT_LOCATION="db")),
        2,
        "fastapi-migrate init",
    )

    secret = f"postgresql+psycopg://app:s3cr%40t@127.0.0.1:{refused_port()}/app"
    env = subprocess_env(DATABASE_URL=secret, MIGRATE_CONNECT_TIMEOUT="0")
    result = cli(project, "upgrade", env=env)
    fails(result, 1, "cannot connect to postgresql+psycopg://app:***@127.0.0.1")
    verbose = cli(project, "check", "--verbose", env=env)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert "DatabaseUnavailable" in verbose.stderr
    for output in (result.stderr, verbose.stderr, verbose.stdout):
        assert "s3cr" not in output


def test_upgrade_refuses_what_a_starting_app_refuses(project: Path, tmp_path: Path) -> None:
    """Lock held, several heads, a failing revision, an unversioned database, a revision the
    scripts do not know: exit 1 with the startup path's message; baseline adopts."""
    location = write_migrations(project, 2)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = subprocess_env(DATABASE_URL=url, MIGRATE_LOCK_TIMEOUT="0.3")

    db = Database(url)
    try:
        with migration_lock(
            db, version_table="alembic_version", version_table_schema=None, timeout=5
        ):
            fails(cli(project, "upgrade", env=env), 1, "migration lock", "MIGRATE_LOCK_TIMEOUT")
    finally:
        db.dispose()
    assert table_names(url) == set()

    add_revision(location, "r2b", "r1", table="t2b")
    fails(cli(project, "upgrade", env=env), 1, "several heads (r2, r2b)")
    ok(cli(project, "revision", "--merge", "-m", "merge", "--rev-id", "m1", env=env))
    out = ok(cli(project, "upgrade", env=env)).stdout
    assert summary_line(out).startswith("migration upgraded: from base to m1, applied 4 ["), out
    fails(cli(project, "downgrade", "nope", env=env), 1, "nope")

    add_revision(location, "r4", "m1", upgrade="op.execute('SELECT * FROM no_such_table')")
    fails(cli(project, "upgrade", env=env), 1, "revision r4 failed", "no_such_table")
    assert current_revisions(url) == {"m1"}

    legacy = f"sqlite:///{tmp_path / 'legacy.db'}"
    execute(legacy, "CREATE TABLE legacy (id INTEGER PRIMARY KEY)")
    env = subprocess_env(DATABASE_URL=legacy)
    fails(cli(project, "upgrade", "m1", env=env), 1, "no version table", "MIGRATE_BASELINE")
    out = ok(cli(project, "upgrade", "m1", env={**env, "MIGRATE_BASELINE": "r1"})).stdout
    assert summary_line(out).startswith("migration adopted: from base to m1"), out

    execute(legacy, "UPDATE alembic_version SET version_num = 'r9'")
    fails(cli(project, "upgrade", env=env), 1, "revision r9", "do not know")


@pytest.mark.parametrize("name", [cmd.name for cmd in COMMANDS])
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: fastapi-migrate {name} ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "a command is required"),
        (["migrate"], "invalid choice: 'migrate'"),
        (["downgrade"], "the following arguments are required: REV"),
        (["revision"], "the following arguments are required: -m/--message"),
        (["upgrade", "--sqll"], "unrecognized arguments: --sqll"),
    ],
)
def test_bad_usage_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_schema_differences_name_each_difference() -> None:
    engine = sa.create_engine("sqlite://")
    models = sa.MetaData()
    sa.Table(
        "notes",
        models,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text),
    )
    sa.Table("tags", models, sa.Column("id", sa.Integer, primary_key=True))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE notes (id INTEGER NOT NULL PRIMARY KEY, title VARCHAR(50), old INT)"
        )
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        conn.exec_driver_sql("CREATE TABLE legacy (id INTEGER)")
        found = set(schema_differences(conn, models))
    assert found == {
        "table tags: in the models, missing from the database",
        "table legacy: in the database, not in the models",
        "column notes.body: in the models, missing from the database",
        "column notes.old: in the database, not in the models",
        "column notes.title: type is VARCHAR(50) in the database, VARCHAR(200) in the models",
        "column notes.title: nullable is True in the database, False in the models",
    }


def test_reading_commands_never_create_a_missing_sqlite_file(project: Path) -> None:
    write_migrations(project, 2)
    path = project / "not-yet.db"
    env = subprocess_env(DATABASE_URL=f"sqlite:///{path}")
    assert ok(cli(project, "current", env=env)).stdout.strip() == "base (empty database)"
    checked = cli(project, "check", env=env)
    assert checked.returncode == 1, checked.stderr
    assert f"the database file {path} does not exist; run: fastapi-migrate upgrade" in (
        checked.stdout
    )
    sql = ok(cli(project, "upgrade", "--sql", env=env)).stdout
    assert "CREATE TABLE t1" in sql and "CREATE TABLE t2" in sql
    assert not path.exists()
    ok(cli(project, "upgrade", env=env))
    assert current_revisions(f"sqlite:///{path}") == {"r2"}


def test_an_unknown_revision_on_the_command_line_is_a_failure_naming_it(project: Path) -> None:
    write_migrations(project, 1)
    url = f"sqlite:///{project / 'app.db'}"
    env = subprocess_env(DATABASE_URL=url)
    ok(cli(project, "upgrade", env=env))
    fails(cli(project, "upgrade", "nope", env=env), 1, "upgrade nope: No such revision", "'nope'")
    for command in ("downgrade", "stamp"):
        fails(cli(project, command, "nope", env=env), 1, "Can't locate revision", "'nope'")
    assert current_revisions(url) == {"r1"}
