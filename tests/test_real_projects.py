"""Projects as they are: the ``env.py`` files of Alembic's templates and the variants copied
around (written here as files), Alembic's pyproject.toml configuration, tables made before
Alembic, and an install without the ``[async]`` extra.

Each test does what the project does with ``alembic upgrade head`` and checks that a start
reaches the same schema, or fails with a message that points at the right place.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from fastapi_migrate import (
    ConfigurationError,
    MigrateSettings,
    MigrationFailed,
    UnversionedDatabase,
    migrate,
)

from .cli_helpers import cli, fails, ok
from .support import (
    MARIADB_SERVER,
    add_revision,
    current_revisions,
    execute,
    subprocess_env,
    table_names,
    to_async,
    write_migrations,
)

# -- env.py as projects write it -----------------------------------------------------------------

_NONE_CHECK = "if config.config_file_name is not None:\n    fileConfig(config.config_file_name)"
_ENGINE = """\
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
"""
# pytest-alembic's convention: an Engine may come in config.attributes["connection"].
_ENGINE_FROM_ATTRIBUTES = """\
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
"""
_CONFIGURE = "connection=connection, target_metadata=target_metadata"


def edit(location: Path, old: str, new: str) -> None:
    """Change ``env.py`` the way a project did; ``old`` must be in Alembic's template."""
    env = location / "env.py"
    text = env.read_text()
    assert old in text, f"Alembic's template changed: {old!r} not found"
    env.write_text(text.replace(old, new, 1))


def stock_project(project: Path, template: str, revisions: int = 2) -> Path:
    """``alembic init -t TEMPLATE`` (with its alembic.ini and its placeholder URL) and
    revisions r1..rN."""
    return write_migrations(project, revisions, env=template)


def url_for(template: str, database_url: str) -> str:
    return to_async(database_url) if template == "async" else database_url


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    """A logger the app set up before starting: fileConfig would disable it."""
    logger = logging.getLogger(f"app_{uuid.uuid4().hex[:6]}")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger
    logger.removeHandler(handler)


@pytest.mark.parametrize("template", ["generic", "async"])
@pytest.mark.parametrize(
    "variant",
    [
        pytest.param("fileConfig(config.config_file_name)", id="fileConfig-without-None-check"),
        pytest.param(
            "assert config.config_file_name\nfileConfig(config.config_file_name)",
            id="assert-config-file-name",
        ),
    ],
)
def test_env_py_that_calls_file_config_unconditionally(
    project: Path,
    database_url: str,
    template: str,
    variant: str,
    app_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    location = stock_project(project, template)
    edit(location, _NONE_CHECK, variant)
    monkeypatch.setenv("DATABASE_URL", url_for(template, database_url))
    root_handlers = list(logging.getLogger().handlers)

    result = migrate(MigrateSettings())

    assert (result.action, result.applied) == ("upgraded", ["r1", "r2"])
    assert current_revisions(database_url) == {"r2"}
    assert {"t1", "t2"} <= table_names(database_url)
    # alembic.ini's logging sections were not applied to the app's process.
    assert not app_logger.disabled
    assert logging.getLogger().handlers == root_handlers
    assert migrate(MigrateSettings()).action == "noop"


def test_env_py_that_takes_an_engine_from_config_attributes(
    project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest-alembic's ``env.py``: ``connectable.connect()`` on what ``config.attributes``
    holds; our connection is used, and its ``with`` block does not close it."""
    location = stock_project(project, "generic", revisions=3)
    edit(location, _ENGINE, _ENGINE_FROM_ATTRIBUTES)
    monkeypatch.setenv("DATABASE_URL", database_url)

    result = migrate(MigrateSettings())

    assert (result.action, result.applied) == ("upgraded", ["r1", "r2", "r3"])
    assert current_revisions(database_url) == {"r3"}
    assert {"t1", "t2", "t3"} <= table_names(database_url)
    add_revision(location, "r4", "r3", table="t4")
    assert migrate(MigrateSettings()).applied == ["r4"]
    assert "t4" in table_names(database_url)


@pytest.mark.parametrize("template", ["generic", "async"])
def test_an_error_in_env_py_names_env_py_not_a_revision(
    project: Path, database_url: str, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = stock_project(project, template)
    edit(location, "target_metadata = None", "from myapp_settings_missing import target_metadata")
    monkeypatch.setenv("DATABASE_URL", url_for(template, database_url))

    with pytest.raises(MigrationFailed) as caught:
        migrate(MigrateSettings())

    message = str(caught.value)
    assert caught.value.revision is None
    assert f"env.py ({location / 'env.py'}) failed before any revision ran" in message
    assert "No module named 'myapp_settings_missing'" in message
    assert "revision r1" not in message
    assert "left at no revision" in message
    assert table_names(database_url) == set()


@pytest.mark.parametrize("template", ["generic", "async"])
def test_an_error_in_a_revision_still_names_the_revision(
    project: Path, database_url: str, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = stock_project(project, template, revisions=1)
    add_revision(location, "r2", "r1", upgrade="raise RuntimeError('r2 is broken')")
    monkeypatch.setenv("DATABASE_URL", url_for(template, database_url))

    with pytest.raises(MigrationFailed) as caught:
        migrate(MigrateSettings())

    assert caught.value.revision == "r2"
    assert "revision r2 failed" in str(caught.value)
    assert "env.py" not in str(caught.value).split(";")[0]


@pytest.mark.parametrize("template", ["generic", "async"])
def test_a_version_table_renamed_in_env_py_is_refused_before_anything_runs(
    project: Path, database_url: str, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = stock_project(project, template)
    edit(location, _CONFIGURE, _CONFIGURE + ', version_table="project_version"')
    monkeypatch.setenv("DATABASE_URL", url_for(template, database_url))

    with pytest.raises(ConfigurationError) as caught:
        migrate(MigrateSettings())

    message = str(caught.value)
    assert "env.py configures the version table project_version" in message
    assert "MIGRATE_VERSION_TABLE=project_version" in message
    assert table_names(database_url) == set()  # nothing committed, no version table anywhere

    monkeypatch.setenv("MIGRATE_VERSION_TABLE", "project_version")
    assert migrate(MigrateSettings()).applied == ["r1", "r2"]
    assert current_revisions(database_url, "project_version") == {"r2"}
    assert migrate(MigrateSettings()).action == "noop"


@pytest.fixture
def other_schema(backend: str, database_url: str) -> Iterator[str]:
    """A second schema (PostgreSQL) or database (MariaDB) for the version table."""
    if backend == "sqlite":
        pytest.skip("SQLite has no schemas but attached files")
    name = f"fm_audit_{uuid.uuid4().hex[:8]}"
    if backend == "postgresql":
        execute(database_url, f"CREATE SCHEMA {name}")
        yield name
        return
    execute(MARIADB_SERVER, f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        execute(MARIADB_SERVER, f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("template", ["generic", "async"])
def test_a_version_table_schema_set_in_env_py_only_is_refused_before_anything_runs(
    project: Path,
    database_url: str,
    other_schema: str,
    template: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    location = stock_project(project, template)
    edit(location, _CONFIGURE, _CONFIGURE + f', version_table_schema="{other_schema}"')
    monkeypatch.setenv("DATABASE_URL", url_for(template, database_url))

    with pytest.raises(ConfigurationError) as caught:
        migrate(MigrateSettings())

    message = str(caught.value)
    assert f"MIGRATE_VERSION_TABLE_SCHEMA={other_schema}" in message
    assert "nothing was migrated" in message
    assert table_names(database_url) == set()
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names(schema=other_schema) == []
    finally:
        engine.dispose()

    monkeypatch.setenv("MIGRATE_VERSION_TABLE_SCHEMA", other_schema)
    assert migrate(MigrateSettings()).applied == ["r1", "r2"]
    assert {"t1", "t2"} <= table_names(database_url)
    second = migrate(MigrateSettings())
    assert (second.action, second.to_revision) == ("noop", "r2")


# -- tables made before Alembic ------------------------------------------------------------------


def test_tables_made_before_the_first_migration_are_adopted_with_baseline_base(
    project: Path, database_url: str
) -> None:
    """A project that ``create_all``-ed its first tables, then wrote migrations from there."""
    location = write_migrations(project, 0)
    add_revision(location, "r1", None, table="orders")
    add_revision(
        location,
        "r2",
        "r1",
        upgrade="op.add_column('users', sa.Column('email', sa.String(80)))",
        downgrade="op.drop_column('users', 'email')",
    )
    execute(
        database_url,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(50))",
        "INSERT INTO users (id, name) VALUES (1, 'ada')",
    )

    with pytest.raises(UnversionedDatabase) as caught:
        migrate(MigrateSettings(database_url=database_url))
    assert "MIGRATE_BASELINE=base adopts them" in str(caught.value)
    assert table_names(database_url) == {"users"}

    result = migrate(MigrateSettings(database_url=database_url, baseline="base"))

    assert (result.action, result.applied) == ("adopted", ["r1", "r2"])
    assert execute(database_url, "SELECT id, name, email FROM users") == [[(1, "ada", None)]]
    assert current_revisions(database_url) == {"r2"}
    guide = (Path(__file__).parents[1] / "docs" / "how-it-works.md").read_text()
    assert "`MIGRATE_BASELINE=base` adopts them" in guide


# -- Alembic's pyproject.toml configuration ------------------------------------------------------


def pyproject_project(project: Path, template: str = "pyproject") -> Path:
    """``alembic init -t pyproject db/alembic`` (a folder not called ``migrations``):
    script_location and the rest in ``[tool.alembic]``, alembic.ini with the (placeholder) URL
    and logging only; revisions r1, r2."""
    cfg = Config("alembic.ini", toml_file="pyproject.toml")  # in the project, as a user runs it
    location = project / "db" / "alembic"
    command.init(cfg, "db/alembic", template=template)
    toml = (project / "pyproject.toml").read_text()
    assert 'script_location = "%(here)s/db/alembic"' in toml
    assert "script_location" not in (project / "alembic.ini").read_text()
    for k in (1, 2):
        add_revision(location, f"r{k}", f"r{k - 1}" if k > 1 else None, table=f"t{k}")
    return location


@pytest.mark.parametrize("template", ["pyproject", "pyproject_async"])
def test_pyproject_toml_configuration_is_read_at_startup(
    project: Path, database_url: str, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyproject_project(project, template)
    url = to_async(database_url) if template == "pyproject_async" else database_url
    monkeypatch.setenv("DATABASE_URL", url)

    result = migrate(MigrateSettings())

    assert (result.action, result.applied) == ("upgraded", ["r1", "r2"])
    assert {"t1", "t2"} <= table_names(database_url)
    assert current_revisions(database_url) == {"r2"}
    assert migrate(MigrateSettings()).action == "noop"


def test_pyproject_toml_alone_or_named_by_migrate_config(
    project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = pyproject_project(project)
    monkeypatch.setenv("DATABASE_URL", database_url)
    (project / "alembic.ini").unlink()  # URL and logging elsewhere: it may be dropped
    assert migrate(MigrateSettings()).applied == ["r1", "r2"]

    # From another folder, MIGRATE_CONFIG names it; %(here)s is pyproject.toml's folder.
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MIGRATE_CONFIG", str(project / "pyproject.toml"))
    add_revision(location, "r3", "r2", table="t3")
    assert migrate(MigrateSettings()).applied == ["r3"]
    assert "t3" in table_names(database_url)


def test_pyproject_toml_version_locations_as_a_toml_list(
    project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = pyproject_project(project)
    more = project / "db" / "more_versions"
    more.mkdir()
    add_revision(location, "r3", "r2", table="t3").rename(more / "r3.py")
    toml = project / "pyproject.toml"
    toml.write_text(
        toml.read_text()
        + '\nversion_locations = ["%(here)s/db/alembic/versions", "%(here)s/db/more_versions"]'
        + "\n"
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert migrate(MigrateSettings()).applied == ["r1", "r2", "r3"]
    assert migrate(MigrateSettings()).action == "noop"


def test_pyproject_toml_for_every_cli_command_and_revision_file_template(
    project: Path, database_url: str
) -> None:
    location = pyproject_project(project)
    toml = project / "pyproject.toml"
    toml.write_text(
        toml.read_text().replace(
            "[tool.alembic]\n", '[tool.alembic]\nfile_template = "%%(year)d_%%(rev)s_%%(slug)s"\n'
        )
    )
    env = subprocess_env(DATABASE_URL=database_url)

    assert "r2 (head)" in ok(cli(project, "heads", env=env)).stdout
    ok(cli(project, "upgrade", env=env))
    assert "r2 (head)" in ok(cli(project, "current", env=env)).stdout
    ok(cli(project, "revision", "-m", "add orders", "--rev-id", "r3", env=env))

    written = [p.name for p in (location / "versions").glob("*.py")]
    assert [n for n in written if n.endswith("_r3_add_orders.py")], written
    assert any(re.fullmatch(r"\d{4}_r3_add_orders\.py", n) for n in written), written
    ok(cli(project, "downgrade", "r1", env=env))
    assert current_revisions(database_url) == {"r1"}
    ok(cli(project, "upgrade", env=env))
    assert current_revisions(database_url) == {"r3"}


def test_pyproject_toml_in_the_pytest_plugin(project: Path) -> None:
    pyproject_project(project)
    (project / "test_app.py").write_text(
        textwrap.dedent(
            """\
            import sqlalchemy as sa

            def test_at_head(migrated_engine):
                with migrated_engine.connect() as conn:
                    assert {"t1", "t2"} <= set(sa.inspect(conn).get_table_names())
                    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                    assert [r[0] for r in rows] == ["r2"]
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_app.py"],
        cwd=project,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_init_pyproject_writes_tool_alembic_that_both_commands_read(
    project: Path, database_url: str
) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "shop"\nversion = "1"\n')
    env = subprocess_env(DATABASE_URL=database_url)

    ok(cli(project, "init", "db/alembic", "--pyproject", env=env))

    toml = (project / "pyproject.toml").read_text()
    assert toml.startswith('[project]\nname = "shop"')  # kept as it was
    assert 'script_location = "%(here)s/db/alembic"' in toml
    assert not (project / "alembic.ini").exists()
    ok(cli(project, "revision", "-m", "first", "--rev-id", "r1", env=env))
    ok(cli(project, "upgrade", env=env))
    assert current_revisions(database_url) == {"r1"}
    alembic = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alembic.returncode == 0, alembic.stderr
    assert "r1 (head)" in alembic.stdout
    fails(cli(project, "init", "db/other", "--pyproject", env=env), 2, "[tool.alembic]")


def test_a_broken_pyproject_toml_is_one_clear_error(project: Path) -> None:
    pyproject_project(project)
    toml = project / "pyproject.toml"
    toml.write_text(toml.read_text() + "\nthis is not toml\n")
    line = fails(cli(project, "heads"), 2, "pyproject.toml")
    assert "Invalid" in line or "Expected" in line, line
