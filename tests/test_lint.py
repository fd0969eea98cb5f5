"""``fastapi-migrate lint`` and ``MIGRATE_UNSAFE``: a synthetic history with one revision per
rule (Alembic operations and raw ``op.execute`` SQL), its table of expected findings, on real
PostgreSQL, MariaDB and SQLite, through the CLI and the app's lifespan."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_migrate import UnsafeMigration, migrate_on_startup

from .cli_helpers import cli, ok
from .support import add_revision, current_revisions, execute, subprocess_env, write_migrations

PG, MY, LITE = "postgresql", "mariadb", "sqlite"
ALL = frozenset({PG, MY, LITE})


@dataclass(frozen=True)
class Case:
    """One revision of the synthetic history: its upgrade() on table ``{t}`` (existing: id,
    name VARCHAR(50), qty INTEGER; ``parent`` has id) and the rule it must break there."""

    rule: str
    code: str
    dialects: frozenset[str]


CASES = [
    Case("require-concurrent-index-creation", "op.create_index('ix_{t}', '{t}', ['name'])", {PG}),
    Case(
        "require-concurrent-index-creation",
        "op.execute('CREATE INDEX ix_raw_{t} ON {t} (name)')",
        {PG},
    ),
    Case(
        "ban-concurrent-index-creation-in-transaction",
        "op.create_index('ix_{t}', '{t}', ['name'], postgresql_concurrently=True)",
        {PG},
    ),
    Case(
        "ban-concurrent-index-creation-in-transaction",
        "op.execute('create index concurrently ix_raw_{t} on {t} (name)')",
        {PG},
    ),
    Case(
        "adding-foreign-key-constraint",
        "op.create_foreign_key('fk_{t}', '{t}', 'parent', ['qty'], ['id'])",
        {PG, MY},
    ),
    Case(
        "adding-foreign-key-constraint",
        "op.execute('ALTER TABLE {t} ADD CONSTRAINT fk_raw_{t} FOREIGN KEY (qty) "
        "REFERENCES parent (id)')",
        {PG, MY},
    ),
    Case(
        "constraint-missing-not-valid",
        "op.create_check_constraint('ck_{t}', '{t}', 'qty > 0')",
        {PG},
    ),
    Case(
        "constraint-missing-not-valid",
        "op.execute('ALTER TABLE {t} ADD CONSTRAINT ck_raw_{t} CHECK (qty > 0)')",
        {PG},
    ),
    Case(
        "adding-not-nullable-field",
        "op.alter_column('{t}', 'name', nullable=False, existing_type=sa.String(50))",
        {PG},
    ),
    Case(
        "adding-not-nullable-field",
        "op.execute('ALTER TABLE {t} ALTER COLUMN name SET NOT NULL')",
        {PG},
    ),
    Case(
        "changing-column-type",
        "op.alter_column('{t}', 'name', type_=sa.Text(), existing_type=sa.String(50))",
        {PG, MY},
    ),
    Case(
        "changing-column-type", "op.execute('ALTER TABLE {t} ALTER COLUMN qty TYPE bigint')", {PG}
    ),
    Case("changing-column-type", "op.execute('ALTER TABLE {t} MODIFY qty BIGINT')", {MY}),
    Case(
        "adding-field-with-default",
        "op.add_column('{t}', sa.Column('token', sa.Text(), "
        "server_default=sa.text('gen_random_uuid()::text')))",
        {PG},
    ),
    Case(
        "adding-field-with-default",
        "op.execute('ALTER TABLE {t} ADD COLUMN r double precision DEFAULT random()')",
        {PG},
    ),
    Case(
        "disallowed-unique-constraint",
        "op.create_unique_constraint('uq_{t}', '{t}', ['name'])",
        {PG},
    ),
    Case(
        "disallowed-unique-constraint",
        "op.execute('ALTER TABLE {t} ADD CONSTRAINT uq_raw_{t} UNIQUE (name)')",
        {PG},
    ),
    Case(
        "renaming-column",
        "op.alter_column('{t}', 'name', new_column_name='title', existing_type=sa.String(50))",
        {PG, MY},
    ),
    Case("renaming-column", "op.execute('ALTER TABLE {t} RENAME COLUMN name TO title')", ALL),
    Case("renaming-table", "op.rename_table('{t}', '{t}_new')", ALL),
    Case("renaming-table", "op.execute('ALTER TABLE {t} RENAME TO {t}_raw')", ALL),
    Case("ban-drop-column", "op.drop_column('{t}', 'qty')", ALL),
    Case("ban-drop-column", "op.execute('ALTER TABLE {t} DROP COLUMN qty')", ALL),
    Case("ban-drop-table", "op.drop_table('{t}')", ALL),
    Case("ban-drop-table", "op.execute('DROP TABLE {t}')", ALL),
    Case(
        "batch-table-rebuild",
        "with op.batch_alter_table('{t}') as batch:\n"
        "    batch.alter_column('name', nullable=False, existing_type=sa.String(50))",
        {LITE},
    ),
]

# Revisions with no finding on any dialect: what the rules must let through.
SAFE = [
    "with op.get_context().autocommit_block():\n"
    "    op.create_index('ix_{t}', '{t}', ['name'], postgresql_concurrently=True)",
    "op.execute('ALTER TABLE {t} ADD CONSTRAINT ck_{t} CHECK (qty > 0) NOT VALID')",
    "op.add_column('{t}', sa.Column('flag', sa.Boolean(), nullable=True))",
    "op.add_column('{t}', sa.Column('note', sa.String(20), server_default='x', nullable=False))",
    "op.alter_column('{t}', 'name', server_default='n', existing_type=sa.String(50))",
    "op.execute(\"UPDATE {t} SET name = 'drop table x; alter table y drop column z'\")",
]


def _cases(backend: str) -> list[Case]:
    return [case for case in CASES if backend in case.dialects]


def _history(project: Path, backend: str, *, allow: str | None = None) -> dict[str, Case]:
    """r0 creates ``parent`` and one table per case; then one revision per case (c01...) and
    per safe form (s01...). ``allow``: each case's revision allows its rule with that text."""
    location = write_migrations(project, 0)
    cases = _cases(backend)
    tables = [f"t{n:02d}" for n in range(1, len(cases) + len(SAFE) + 1)]
    create = ["op.create_table('parent', sa.Column('id', sa.Integer, primary_key=True))"]
    create += [
        f"op.create_table({t!r}, sa.Column('id', sa.Integer, primary_key=True), "
        "sa.Column('name', sa.String(50)), sa.Column('qty', sa.Integer))"
        for t in tables
    ]
    add_revision(location, "r0", None, upgrade="\n".join(create))
    down, expected = "r0", {}
    for n, case in enumerate(cases, start=1):
        revision = f"c{n:02d}"
        body = case.code.format(t=tables[n - 1])
        if allow is not None:
            body += f"\n# fastapi-migrate: allow {case.rule}{allow}"
        add_revision(location, revision, down, upgrade=body)
        down, expected[revision] = revision, case
    for n, code in enumerate(SAFE, start=1):
        revision = f"s{n:02d}"
        add_revision(location, revision, down, upgrade=code.format(t=tables[len(cases) + n - 1]))
        down = revision
    return expected


def _lint(project: Path, url: str, *args: str, **env: str) -> tuple[int, list[dict[str, object]]]:
    result = cli(
        project, "lint", *args, "--format", "json", env=subprocess_env(DATABASE_URL=url, **env)
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def _found(findings: list[dict[str, object]]) -> set[tuple[object, object]]:
    return {(f["revision"], f["rule"]) for f in findings}


@pytest.mark.parametrize("backend", [PG, MY, LITE], indirect=True)
def test_every_rule_on_existing_tables_pending_on_the_database(
    project: Path, database_url: str, backend: str
) -> None:
    expected = _history(project, backend)
    ok(cli(project, "upgrade", "r0", env=subprocess_env(DATABASE_URL=database_url)))
    execute(database_url, "INSERT INTO parent (id) VALUES (1)")
    tables_before = _schema(database_url)

    code, findings = _lint(project, database_url)

    assert _found(findings) == {(rev, case.rule) for rev, case in expected.items()}
    assert code == 1
    for finding in findings:  # file and line of the statement, in the revision's own file
        assert finding["file"] == f"migrations/versions/{finding['revision']}.py"
        assert isinstance(finding["line"], int) and finding["line"] >= 11, finding
        assert finding["message"] and finding["fix"], finding
    assert _schema(database_url) == tables_before  # lint migrated nothing
    assert current_revisions(database_url) == {"r0"}


@pytest.mark.parametrize("backend", [PG, MY, LITE], indirect=True)
def test_tables_created_in_the_same_pending_range_are_new(
    project: Path, database_url: str, backend: str
) -> None:
    expected = _history(project, backend)

    code, findings = _lint(project, database_url)  # empty database: r0 is pending too

    errors = {
        (rev, case.rule)
        for rev, case in expected.items()
        if case.rule == "ban-concurrent-index-creation-in-transaction"  # fails on any table
    }
    assert _found(findings) == errors
    assert code == (1 if errors else 0)


@pytest.mark.parametrize("backend", [PG, LITE], indirect=True)
def test_a_range_checks_against_the_tables_of_the_history_at_its_start(
    project: Path, database_url: str, backend: str
) -> None:
    """The CI form: ``lint RELEASED:head`` on a fresh database; nothing is migrated."""
    expected = _history(project, backend)

    code, findings = _lint(project, database_url, "r0:head")

    assert _found(findings) == {(rev, case.rule) for rev, case in expected.items()}
    assert code == 1
    assert _schema(database_url) == {}


@pytest.mark.parametrize("backend", [PG, MY], indirect=True)
def test_allow_with_a_reason_suppresses_and_without_one_is_a_finding(
    project: Path, database_url: str, backend: str
) -> None:
    expected = _history(project, backend, allow=" -- reviewed: tiny table")
    ok(cli(project, "upgrade", "r0", env=subprocess_env(DATABASE_URL=database_url)))

    code, findings = _lint(project, database_url)

    assert code == 0, findings
    assert _found(findings) == {(rev, case.rule) for rev, case in expected.items()}
    assert all(f["allowed"] == "reviewed: tiny table" for f in findings)

    revision = project / "migrations" / "versions" / "c01.py"
    text = revision.read_text().replace(" -- reviewed: tiny table", "")
    revision.write_text(text)
    code, findings = _lint(project, database_url)
    assert code == 1
    assert ("c01", "suppression-without-reason") in _found(findings)
    assert not any(f["allowed"] for f in findings if f["revision"] == "c01")


def test_text_output_one_line_per_finding_and_exit_codes(project: Path, tmp_path: Path) -> None:
    location = write_migrations(project, 1)
    add_revision(location, "r2", "r1", upgrade="op.drop_column('t1', 'name')")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = subprocess_env(DATABASE_URL=url)
    ok(cli(project, "upgrade", "r1", env=env))

    result = cli(project, "lint", env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(
        "r2 migrations/versions/r2.py:11 ban-drop-column: t1: drops column name"
    )
    assert "Fix: two releases" in lines[0]
    assert lines[-1] == "1 finding(s) in 1 revision(s) checked"

    ok(cli(project, "upgrade", env=env))
    result = ok(cli(project, "lint", env=env))
    assert "0 finding(s) in 0 revision(s) checked" in result.stdout

    for bad in (["lint", "r1"], ["lint", "nope:head"], ["lint", "--format", "xml"]):
        result = cli(project, *bad, env=env)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr


def test_an_unreachable_database_lints_every_revision_and_says_so(project: Path) -> None:
    location = write_migrations(project, 1)
    add_revision(location, "r2", "r1", upgrade="op.create_index('ix', 't1', ['name'])")
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"

    result = cli(project, "lint", env=subprocess_env(DATABASE_URL=url, MIGRATE_CONNECT_TIMEOUT="1"))

    assert result.returncode == 1, result.stderr
    assert "r2 migrations/versions/r2.py:11 require-concurrent-index-creation: t1" in result.stdout
    assert "the database did not answer" in result.stdout
    assert "every revision checked on its own" in result.stdout
    assert "secret" not in result.stdout + result.stderr


def test_sizes_and_max_rows_waive_lock_findings_never_drops(project: Path, tmp_path: Path) -> None:
    from .support import fresh_database

    location = write_migrations(project, 2)
    add_revision(
        location,
        "r3",
        "r2",
        upgrade="op.create_index('ix', 't1', ['name'])\nop.drop_column('t2', 'name')",
    )
    with fresh_database(PG, tmp_path) as url:
        ok(cli(project, "upgrade", "r2", env=subprocess_env(DATABASE_URL=url)))
        execute(url, "INSERT INTO t1 (id, name) SELECT g, 'n' FROM generate_series(1, 500) g")
        execute(url, "ANALYZE t1")

        code, findings = _lint(project, url, MIGRATE_UNSAFE_MAX_ROWS="1000")
        by_rule = {f["rule"]: f for f in findings}
        assert by_rule["require-concurrent-index-creation"]["rows"] == 500
        assert isinstance(by_rule["require-concurrent-index-creation"]["bytes"], int)
        assert by_rule["require-concurrent-index-creation"]["waived"] is True
        assert by_rule["ban-drop-column"]["waived"] is False  # a drop is never fine by size
        assert code == 1

        code, findings = _lint(project, url, MIGRATE_UNSAFE_MAX_ROWS="100")
        assert {f["rule"]: f["waived"] for f in findings} == {
            "require-concurrent-index-creation": False,
            "ban-drop-column": False,
        }
        result = cli(project, "lint", env=subprocess_env(DATABASE_URL=url))
        assert "[~500 rows, " in result.stdout


# -- at startup ------------------------------------------------------------------------------


def _schema(url: str) -> dict[str, list[tuple[str, str, bool]]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            return {
                table: sorted(
                    (c["name"], str(c["type"]), bool(c["nullable"]))
                    for c in inspector.get_columns(table)
                )
                + sorted(
                    ("index", str(i["name"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                )
                for table in sorted(inspector.get_table_names())
            }
    finally:
        engine.dispose()


def _unsafe_project(project: Path, url: str) -> None:
    location = write_migrations(project, 1)
    add_revision(
        location,
        "r2",
        "r1",
        upgrade="op.create_table('t2', sa.Column('id', sa.Integer))\n"
        "op.create_index('ix_id', 't1', ['id'])\nop.drop_column('t1', 'name')",
    )
    ok(cli(project, "upgrade", "r1", env=subprocess_env(DATABASE_URL=url)))
    execute(url, "INSERT INTO t1 (id, name) VALUES (1, 'kept')")


@pytest.mark.parametrize("backend", [PG, MY, LITE], indirect=True)
def test_refuse_at_startup_leaves_the_database_exactly_as_it_was(
    project: Path, database_url: str, backend: str
) -> None:
    _unsafe_project(project, database_url)
    before = (_schema(database_url), current_revisions(database_url))
    app = FastAPI(lifespan=migrate_on_startup(database_url=database_url, unsafe="refuse"))

    with pytest.raises(UnsafeMigration) as raised, TestClient(app):
        pass

    message = str(raised.value)
    assert "MIGRATE_UNSAFE=refuse" in message and "nothing was migrated" in message
    assert "ban-drop-column" in message and "r2" in message
    assert (_schema(database_url), current_revisions(database_url)) == before
    assert execute(database_url, "SELECT id, name FROM t1") == [[(1, "kept")]]


def test_refuse_through_the_cli_upgrade_exits_1(project: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _unsafe_project(project, url)

    result = cli(project, "upgrade", env=subprocess_env(DATABASE_URL=url, MIGRATE_UNSAFE="refuse"))

    assert result.returncode == 1, result.stderr
    assert "ban-drop-column" in result.stderr and "Traceback" not in result.stderr
    assert current_revisions(url) == {"r1"}


@pytest.mark.parametrize("backend", [PG, LITE], indirect=True)
def test_warn_logs_each_finding_then_migrates_and_allow_checks_nothing(
    project: Path, database_url: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    _unsafe_project(project, database_url)
    caplog.set_level(logging.WARNING, logger="fastapi_migrate")
    app = FastAPI(lifespan=migrate_on_startup(database_url=database_url))  # warn: the default

    with TestClient(app):
        pass

    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ban-drop-column" in m and "r2" in m for m in warned), warned
    if backend == PG:
        assert any("require-concurrent-index-creation" in m for m in warned), warned
    assert not any("t2" in m for m in warned), warned  # created in the same revision: new
    assert current_revisions(database_url) == {"r2"}

    caplog.clear()
    add_revision(project / "migrations", "r3", "r2", upgrade="op.drop_table('t2')")
    app = FastAPI(lifespan=migrate_on_startup(database_url=database_url, unsafe="allow"))
    with TestClient(app):
        pass
    assert not [r for r in caplog.records if "unsafe" in r.getMessage()]
    assert current_revisions(database_url) == {"r3"}


def test_a_noop_start_runs_no_check(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _unsafe_project(project, url)
    ok(cli(project, "upgrade", env=subprocess_env(DATABASE_URL=url)))
    from fastapi_migrate.lint import render

    def boom(*_: object) -> None:
        raise AssertionError("rendered on a no-op start")

    monkeypatch.setattr(render.Renderer, "__init__", boom)
    app = FastAPI(lifespan=migrate_on_startup(database_url=url, unsafe="refuse"))
    with TestClient(app) as client:
        assert client.app.state.migration.action == "noop"  # type: ignore[attr-defined]
