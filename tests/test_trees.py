"""Several migration trees in one app (issue 8.1): one version table per package, migrated in
order under one lock; and Alembic's own layout, several bases in one version table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from fastapi_migrate import (
    ConfigurationError,
    LockTimeout,
    MigrateSettings,
    MigrationFailed,
    MultipleHeads,
    PendingMigrations,
    UnknownRevision,
    UnversionedDatabase,
    migrate,
)

from .conftest import require_backend
from .support import (
    MARIADB_SERVER,
    add_revision,
    current_revisions,
    execute,
    start_uvicorn,
    stop,
    subprocess_env,
    table_names,
    wait_http,
    write_migrations,
)

AUTH = {"name": "auth", "script_location": "auth/migrations", "version_table": "auth_version"}
BILLING = {
    "name": "billing",
    "script_location": "billing/migrations",
    "version_table": "billing_version",
}
# The app's own tree keeps Alembic's default version table: a single-tree app grows into this.
APP = {"name": "app", "script_location": "migrations", "version_table": "alembic_version"}


def _table(name: str, *columns: str) -> str:
    body = ", ".join(["sa.Column('id', sa.Integer, primary_key=True)", *columns])
    return f"op.create_table({name!r}, {body})"


USER_FK = "sa.Column('user_id', sa.Integer, sa.ForeignKey('auth_users.id'))"


def write_auth(root: Path, revisions: int = 2) -> Path:
    location = write_migrations(root, 0, folder="auth/migrations")
    add_revision(
        location, "a1", None, upgrade=_table("auth_users", "sa.Column('email', sa.String(80))")
    )
    if revisions >= 2:
        add_revision(location, "a2", "a1", upgrade=_table("auth_sessions", USER_FK))
    return location


def write_billing(root: Path) -> Path:
    # Its foreign key to auth's table fails on PostgreSQL and MariaDB unless auth ran first.
    location = write_migrations(root, 0, folder="billing/migrations")
    add_revision(location, "b1", None, upgrade=_table("billing_invoices", USER_FK))
    return location


def write_app(root: Path, *, user_fk: bool = True) -> Path:
    location = write_migrations(root, 0)
    columns = [USER_FK] if user_fk else ["sa.Column('user_id', sa.Integer)"]
    add_revision(location, "r1", None, upgrade=_table("notes", *columns))
    add_revision(location, "r2", "r1", upgrade=_table("tags", "sa.Column('label', sa.String(20))"))
    return location


def versions(url: str) -> dict[str, set[str]]:
    return {
        tree["name"]: current_revisions(url, tree["version_table"]) for tree in (AUTH, BILLING, APP)
    }


def actions(result: Any) -> dict[str, tuple[str, list[str]]]:
    return {name: (r.action, r.applied) for name, r in result.trees.items()}


APP_MODULE = """\
from fastapi import FastAPI
from fastapi_migrate import health_router, migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())
app.include_router(health_router)


@app.get("/migration")
def migration() -> dict:
    r = app.state.migration
    return {"action": r.action, "trees": {n: [t.action, t.applied] for n, t in r.trees.items()}}
"""


def test_replicas_and_release_jobs_migrate_every_tree_once_in_order(
    project: Path, database_url: str
) -> None:
    """A uvicorn replica and two `fastapi-migrate upgrade` jobs start together on an empty
    database: one of them migrates auth, billing, app in that order, the others find it done."""
    write_auth(project)
    write_billing(project)
    write_app(project)
    (project / "main.py").write_text(APP_MODULE)
    env = subprocess_env(DATABASE_URL=database_url, MIGRATE_TREES=json.dumps([AUTH, BILLING, APP]))
    server, port = start_uvicorn("main:app", project, env)
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "fastapi_migrate", "upgrade"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = [job.communicate(timeout=120)[0] for job in jobs]
        assert [job.returncode for job in jobs] == [0, 0], outputs
        assert wait_http(port, "/migration", server, timeout=60) == 200
        served = httpx2.get(f"http://127.0.0.1:{port}/migration").json()
        health = httpx2.get(f"http://127.0.0.1:{port}/health/migrations")
    finally:
        log = stop(server)

    lines = [next(x for x in out.splitlines() if x.startswith("migration ")) for out in outputs]
    done = [line.split()[1].rstrip(":") for line in lines] + [served["action"]]
    assert sorted(done) == ["noop", "noop", "upgraded"], (lines, served, log)
    expected = "(trees: auth upgraded [a1,a2]; billing upgraded [b1]; app upgraded [r1,r2])"
    if served["action"] == "upgraded":
        assert served["trees"] == {
            "auth": ["upgraded", ["a1", "a2"]],
            "billing": ["upgraded", ["b1"]],
            "app": ["upgraded", ["r1", "r2"]],
        }
    else:
        assert any(line.endswith(expected) for line in lines), lines
        assert served["trees"] == {
            "auth": ["noop", []],
            "billing": ["noop", []],
            "app": ["noop", []],
        }
    assert versions(database_url) == {"auth": {"a2"}, "billing": {"b1"}, "app": {"r2"}}
    assert {"auth_users", "auth_sessions", "billing_invoices", "notes", "tags"} <= table_names(
        database_url
    )
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"

    # A new revision in one package: only that tree moves.
    add_revision(project / "billing/migrations", "b2", "b1", upgrade=_table("billing_refunds"))
    settings = MigrateSettings(database_url=database_url, trees=[AUTH, BILLING, APP])
    result = migrate(settings)
    assert (result.action, result.applied) == ("upgraded", ["b2"])
    assert (result.from_revision, result.to_revision) == ("a2,b1,r2", "a2,b2,r2")
    assert actions(result) == {
        "auth": ("noop", []),
        "billing": ("upgraded", ["b2"]),
        "app": ("noop", []),
    }
    again = migrate(settings)
    assert (again.action, again.applied) == ("noop", [])
    assert list(again.trees) == ["auth", "billing", "app"]


def test_new_package_is_replayed_and_a_tree_that_needs_a_human_stops_every_tree(
    project: Path, database_url: str, backend: str
) -> None:
    write_auth(project)
    write_billing(project)
    write_app(project, user_fk=False)
    # Yesterday: a single-tree app.
    migrate(MigrateSettings(database_url=database_url, script_location="migrations"))

    # Today it ships auth as a package: the database is versioned, so auth is new and replayed.
    result = migrate(MigrateSettings(database_url=database_url, trees=[AUTH, APP]))
    assert actions(result) == {"auth": ("upgraded", ["a1", "a2"]), "app": ("noop", [])}
    assert result.from_revision == "r2"

    # billing is added, but this replica only checks or waits: it names the tree behind.
    trees = [AUTH, BILLING, APP]
    behind = r"migration tree 'billing': the database is at no revision"
    with pytest.raises(PendingMigrations, match=behind):
        migrate(MigrateSettings(database_url=database_url, trees=trees, mode="check"))
    with pytest.raises(LockTimeout, match=behind + r", not at head \(b1\)"):
        migrate(
            MigrateSettings(database_url=database_url, trees=trees, mode="wait", lock_timeout=0.3)
        )
    assert versions(database_url)["billing"] == set()

    # The app's database is at a revision its scripts do not know (newer code was rolled back):
    # auth's pending a3 is not applied either, since every tree is decided before any runs.
    add_revision(project / "auth/migrations", "a3", "a2", upgrade=_table("auth_tokens"))
    execute(database_url, "UPDATE alembic_version SET version_num = 'r9'")
    with pytest.raises(UnknownRevision, match=r"^migration tree 'app': .* revision r9"):
        migrate(MigrateSettings(database_url=database_url, trees=trees))
    assert versions(database_url) == {"auth": {"a2"}, "billing": set(), "app": {"r9"}}
    execute(database_url, "UPDATE alembic_version SET version_num = 'r2'")

    # A revision of the second tree fails: it is named, with the tree and where it was left.
    add_revision(
        project / "billing/migrations", "b2", "b1", upgrade="op.execute('SELECT * FROM nowhere')"
    )
    with pytest.raises(MigrationFailed) as failed:
        migrate(MigrateSettings(database_url=database_url, trees=trees))
    message = str(failed.value)
    assert message.startswith("migration tree 'billing': revision b2 failed"), message
    assert "migrated before it: auth (upgraded)" in message
    # b1 and b2 ran in one transaction, except on MariaDB, which commits each DDL statement.
    left = "b1" if backend == "mariadb" else None
    assert (failed.value.revision, failed.value.current_revision) == ("b2", left)
    assert f"the database is left at {left or 'no revision'}" in message
    assert versions(database_url)["auth"] == {"a3"}
    assert versions(database_url)["app"] == {"r2"}


def test_unversioned_database_needs_a_baseline_per_tree(project: Path, database_url: str) -> None:
    write_auth(project)
    write_billing(project)
    write_app(project)
    # A database made by hand, as auth's a1 and the app's r1 would have made it.
    execute(
        database_url,
        "CREATE TABLE auth_users (id INTEGER PRIMARY KEY, email VARCHAR(80))",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER)",
    )
    before = table_names(database_url)
    with pytest.raises(UnversionedDatabase, match=r"^migration tree 'auth': .*\"baseline\""):
        migrate(MigrateSettings(database_url=database_url, trees=[AUTH, APP]))
    assert table_names(database_url) == before  # nothing touched, no version table made

    trees = [{**AUTH, "baseline": "a1"}, {**APP, "baseline": "r1"}]
    result = migrate(MigrateSettings(database_url=database_url, trees=trees))
    assert result.action == "adopted"
    assert actions(result) == {"auth": ("adopted", ["a2"]), "app": ("adopted", ["r2"])}

    # The database is versioned now: a package without a baseline is new, and replayed.
    result = migrate(MigrateSettings(database_url=database_url, trees=[*trees, BILLING]))
    assert actions(result)["billing"] == ("upgraded", ["b1"])
    assert versions(database_url) == {"auth": {"a2"}, "billing": {"b1"}, "app": {"r2"}}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"trees": [AUTH, {**BILLING, "version_table": "auth_version"}]}, "own version_table"),
        ({"trees": [AUTH, {**BILLING, "name": "auth"}]}, "own name"),
        ({"trees": [{**AUTH, "version_table": "auth-version"}]}, "plain SQL identifier"),
        ({"trees": [{**AUTH, "scripts": "x"}]}, "Extra inputs"),
        ({"trees": [AUTH], "empty_database": "create_all"}, "cannot be combined"),
        ({"trees": [AUTH], "baseline": "a1"}, 'give the tree its "baseline"'),
        ({"environment": '[{"script_location": "auth"'}, "MIGRATE_TREES is JSON"),
    ],
)
def test_tree_settings_that_cannot_work_are_configuration_errors(
    project: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], message: str
) -> None:
    if "environment" in settings:
        monkeypatch.setenv("MIGRATE_TREES", settings.pop("environment"))
    with pytest.raises(ConfigurationError, match="MIGRATE_") as caught:
        MigrateSettings(database_url="sqlite://", **settings)
    assert message in str(caught.value)


def test_trees_from_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MIGRATE_TREES", json.dumps([AUTH, {k: BILLING[k] for k in BILLING if k != "name"}])
    )
    trees = MigrateSettings(database_url="sqlite://").trees
    assert [(t.name, t.version_table, t.target) for t in trees] == [
        ("auth", "auth_version", None),
        ("billing_version", "billing_version", None),
    ]


# -- Alembic's own layout: several bases, branch labels, one version table ---------------------

ALEMBIC_INI = """\
[alembic]
script_location = migrations
path_separator = space
version_locations = %(here)s/migrations/versions %(here)s/auth_versions
"""


def label(path: Path, branch: str) -> None:
    path.write_text(
        path.read_text().replace("branch_labels = None", f"branch_labels = ({branch!r},)")
    )


def test_several_bases_in_one_version_table_with_target_heads(
    project: Path, database_url: str
) -> None:
    location = write_migrations(project, 0)
    label(add_revision(location, "r1", None, table="notes"), "app")
    auth = project / "auth_versions"
    auth.mkdir()
    (project / "alembic.ini").write_text(ALEMBIC_INI)
    label(add_revision(location, "a1", None, table="auth_users"), "auth")
    (location / "versions" / "a1.py").rename(auth / "a1.py")

    with pytest.raises(MultipleHeads, match="MIGRATE_TARGET=heads"):
        migrate(MigrateSettings(database_url=database_url))
    settings = MigrateSettings(database_url=database_url, target="heads")
    result = migrate(settings)
    assert (result.action, sorted(result.applied), result.trees) == ("upgraded", ["a1", "r1"], {})
    assert current_revisions(database_url) == {"a1", "r1"}

    add_revision(location, "a2", "a1", table="auth_sessions").rename(auth / "a2.py")
    result = migrate(settings)
    assert (result.action, result.applied) == ("upgraded", ["a2"])
    assert current_revisions(database_url) == {"a2", "r1"}
    assert migrate(settings).action == "noop"
    assert {"notes", "auth_users", "auth_sessions"} <= table_names(database_url)


# -- the pytest plugin: its template is migrated by the same runner -----------------------------

PLUGIN_TESTS = """\
import pytest
import sqlalchemy as sa


@pytest.mark.parametrize("k", range(2))
def test_every_tree_at_head(migrated_engine, k):
    with migrated_engine.begin() as c:
        for table, head in [("auth_version", "a2"), ("billing_version", "b1"),
                            ("alembic_version", "r2")]:
            assert c.execute(sa.text(f"SELECT version_num FROM {table}")).scalar() == head
        c.execute(sa.text("INSERT INTO auth_users (id, email) VALUES (1, 'a@b.c')"))
        c.execute(sa.text("INSERT INTO billing_invoices (id, user_id) VALUES (1, 1)"))
"""


def test_pytest_plugin_migrates_its_template_with_every_tree(project: Path) -> None:
    """On MariaDB, whose template copy replays each table (foreign keys across trees too)."""
    require_backend("mariadb")
    write_auth(project)
    write_billing(project)
    write_app(project)
    (project / "test_user.py").write_text(PLUGIN_TESTS)
    env = subprocess_env(
        MIGRATE_TREES=json.dumps([AUTH, BILLING, APP]), MIGRATE_TEST_DATABASE_URL=MARIADB_SERVER
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
