"""The no-op start decided without executing revision files, and never wrongly.

Each test changes the revision files or the database between real starts (``migrate()`` on a real
SQLite file or PostgreSQL database) and checks what a user would: the action, the tables, the
error, and whether any revision file was executed (each file appends its id to a log on import).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from fastapi_migrate import (
    MigrateSettings,
    MigrationResult,
    MultipleHeads,
    PendingMigrations,
    UnknownRevision,
    UnversionedDatabase,
    migrate,
)
from fastapi_migrate.glue.heads import CACHE_NAME, script_heads

from .conftest import require_backend
from .support import (
    add_revision,
    current_revisions,
    execute,
    fresh_database,
    table_names,
    to_async,
    write_migrations,
)

_MARK = """
import os as _os

with open(_os.environ["FM_EXECUTED"], "a") as _log:
    _log.write(revision + "\\n")
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    require_backend(request.param)
    with fresh_database(request.param, tmp_path) as database_url:
        yield database_url


@pytest.fixture
def executed(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file every revision appends its id to when Alembic executes it."""
    path = project / "executed.log"
    path.write_text("")
    monkeypatch.setenv("FM_EXECUTED", str(path))
    return path


def ran(executed: Path) -> list[str]:
    """Revision files executed since the last call."""
    names = executed.read_text().split()
    executed.write_text("")
    return names


def revision(location: Path, rev: str, down: str | tuple[str, ...] | None, **kw: str) -> Path:
    path = add_revision(location, rev, list(down) if isinstance(down, tuple) else down, **kw)
    path.write_text(path.read_text() + _MARK)
    return path


def migrations(project: Path, count: int = 3) -> Path:
    location = write_migrations(project, 0)
    for k in range(1, count + 1):
        revision(location, f"r{k}", f"r{k - 1}" if k > 1 else None, table=f"t{k}")
    return location


def age(location: Path) -> None:
    """Files written a while ago, as after a deploy: the cache may be written for them."""
    past = time.time() - 3600
    for path in (location / "versions").glob("*.py"):
        os.utime(path, (past, past))
    os.utime(location / "versions", (past, past))


def start(url: str, location: Path, **settings: object) -> MigrationResult:
    return migrate(MigrateSettings(database_url=url, script_location=str(location), **settings))


def cache_of(location: Path) -> Path:
    return location / "__pycache__" / CACHE_NAME


def heads_source(caplog: pytest.LogCaptureFixture) -> str | None:
    """Where the last fast no-op took its heads from: "cache", "text", or None (no fast no-op)."""
    found = None
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("no-op start:"):
            found = message.split("heads from the ")[1].split()[0]
    caplog.clear()
    return found


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="fastapi_migrate")
    return caplog


@pytest.fixture
def at_head(url: str, project: Path, executed: Path) -> Path:
    """r1..r3 applied, files aged, one no-op start done so the cache holds the heads."""
    location = migrations(project)
    assert start(url, location).action == "upgraded"
    assert ran(executed) == ["r1", "r2", "r3"]
    age(location)
    assert start(url, location).action == "noop"
    assert cache_of(location).is_file()
    return location


def test_a_noop_restart_executes_no_revision_file(
    url: str, at_head: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    assert ran(executed) == []
    heads_source(debug_log)
    result = start(url, at_head)
    assert (result.action, result.from_revision, result.to_revision) == ("noop", "r3", "r3")
    assert ran(executed) == []
    assert heads_source(debug_log) == "cache"
    assert current_revisions(url) == {"r3"}


def test_an_empty_history_restarts_on_the_fast_path(
    url: str, project: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    location = migrations(project, 0)  # a new project: no revision yet
    age(location)
    start(url, location)  # the first start writes the (empty) version table
    heads_source(debug_log)

    assert start(url, location).action == "noop"
    assert heads_source(debug_log) in ("cache", "text")
    assert start(url, location).action == "noop"
    assert heads_source(debug_log) == "cache"

    revision(location, "r1", None, table="t1")  # the first revision is seen, and applied
    assert start(url, location).applied == ["r1"]
    assert ran(executed) == ["r1"]
    assert current_revisions(url) == {"r1"}


def test_a_noop_restart_on_mariadb_reads_the_version_on_a_bare_connection(
    project: Path, tmp_path: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    """The same on MariaDB, through pymysql's bare connection (its own autocommit handling):
    a restart at the target executes nothing; one behind it migrates."""
    require_backend("mariadb")
    with fresh_database("mariadb", tmp_path) as mariadb:
        location = migrations(project)
        assert start(mariadb, location).action == "upgraded"
        age(location)
        ran(executed)
        for source in ("text", "cache"):
            heads_source(debug_log)
            assert start(mariadb, location).action == "noop"
            assert heads_source(debug_log) == source and ran(executed) == []
        revision(location, "r4", "r3", table="t4")
        assert start(mariadb, location).applied == ["r4"]
        assert current_revisions(mariadb) == {"r4"}


def test_a_new_revision_is_applied(url: str, at_head: Path, executed: Path) -> None:
    revision(at_head, "r4", "r3", table="t4")
    result = start(url, at_head)
    assert (result.action, result.applied) == ("upgraded", ["r4"])
    assert "t4" in table_names(url)
    assert current_revisions(url) == {"r4"}


def _rewrite_same_stat(path: Path, old: bytes, new: bytes) -> None:
    """Edit in place keeping size, inode and mtime: only the ctime tells the change."""
    before = path.stat()
    data = path.read_bytes().replace(old, new)
    assert len(data) == before.st_size and data != path.read_bytes()
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


def test_an_edit_keeping_size_and_mtime_is_seen(url: str, at_head: Path) -> None:
    # The head's id changes from r3 to r9: the database's r3 is now unknown.
    _rewrite_same_stat(at_head / "versions" / "r3.py", b"revision = 'r3'", b"revision = 'r9'")
    with pytest.raises(UnknownRevision, match="r3"):
        start(url, at_head)


def test_an_edit_that_branches_the_history_is_seen(url: str, at_head: Path) -> None:
    # r3 now follows r1: r2 and r3 are both heads.
    _rewrite_same_stat(
        at_head / "versions" / "r3.py", b"down_revision = 'r2'", b"down_revision = 'r1'"
    )
    with pytest.raises(MultipleHeads):
        start(url, at_head)


def _replace_same_mtime(path: Path, old: bytes, new: bytes) -> None:
    """Replace the file by a new one (a new inode) with the old mtime, as tar or rsync do."""
    before = path.stat()
    data = path.read_bytes().replace(old, new)
    assert data != path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_file_replaced_with_the_same_name_size_and_mtime_is_seen(url: str, at_head: Path) -> None:
    """As a tar or rsync deploy writes it: a new inode, the old mtime."""
    _replace_same_mtime(at_head / "versions" / "r3.py", b"revision = 'r3'", b"revision = 'r8'")
    with pytest.raises(UnknownRevision, match="r3"):
        start(url, at_head)


def test_an_older_file_replaced_is_seen(url: str, at_head: Path) -> None:
    """Not a head, but a new inode (git, rsync, an editor that saves by renaming): r2 now
    starts a history of its own, so r1 is a head beside r3."""
    _replace_same_mtime(
        at_head / "versions" / "r2.py", b"down_revision = 'r1'", b"down_revision = None"
    )
    with pytest.raises(MultipleHeads):
        start(url, at_head)


def test_an_older_file_edited_in_place_is_seen_when_the_folder_changes(
    url: str, at_head: Path
) -> None:
    """The documented limit of the cache's key: an edit in place of a file that is not a head
    (same inode) is seen at the next change of the folder's listing. It brings no migration to
    apply: here it makes a second head out of r2, which Alembic refuses."""
    _rewrite_same_stat(
        at_head / "versions" / "r3.py", b"down_revision = 'r2'", b"down_revision = 'r1'"
    )
    with pytest.raises(MultipleHeads):  # r3 is the head: its own edit is seen at once
        start(url, at_head)
    _rewrite_same_stat(
        at_head / "versions" / "r3.py", b"down_revision = 'r1'", b"down_revision = 'r2'"
    )
    age(at_head)
    assert start(url, at_head).action == "noop"
    assert start(url, at_head).action == "noop"  # from the cache
    _rewrite_same_stat(
        at_head / "versions" / "r2.py", b"down_revision = 'r1'", b"down_revision = None"
    )
    assert start(url, at_head).action == "noop"  # r2 is not a head: not seen yet
    # Nor for "heads", where Alembic would now run r1 again (it has become a head of its own).
    assert start(url, at_head, target="heads").action == "noop"
    revision(at_head, "r4", "r3", table="t4")
    with pytest.raises(MultipleHeads):  # the listing changed: every file is read again
        start(url, at_head)


def test_a_removed_head_is_seen(url: str, at_head: Path) -> None:
    (at_head / "versions" / "r3.py").unlink()
    with pytest.raises(UnknownRevision, match="r3"):
        start(url, at_head)
    result = start(url, at_head, unknown_revision="ignore")
    assert (result.action, result.from_revision) == ("noop", "r3")


def test_branches_then_a_merge(
    url: str, at_head: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    revision(at_head, "r4a", "r3", table="t4a")
    revision(at_head, "r4b", "r3", table="t4b")
    with pytest.raises(MultipleHeads):
        start(url, at_head)
    result = start(url, at_head, target="heads")
    assert result.action == "upgraded" and sorted(result.applied) == ["r4a", "r4b"]
    assert current_revisions(url) == {"r4a", "r4b"}
    ran(executed)
    heads_source(debug_log)
    # At both heads: a fast no-op for "heads", never for "head".
    assert start(url, at_head, target="heads").action == "noop"
    assert heads_source(debug_log) == "text" and ran(executed) == []
    with pytest.raises(MultipleHeads):
        start(url, at_head)
    revision(at_head, "r5", ("r4a", "r4b"), upgrade="pass")
    result = start(url, at_head)
    assert (result.action, result.applied, result.to_revision) == ("upgraded", ["r5"], "r5")
    assert current_revisions(url) == {"r5"}
    age(at_head)
    ran(executed)
    heads_source(debug_log)
    for source in ("text", "cache"):
        assert start(url, at_head).action == "noop"
        assert heads_source(debug_log) == source and ran(executed) == []


def test_a_database_moved_back_is_upgraded(url: str, at_head: Path) -> None:
    execute(url, "UPDATE alembic_version SET version_num = 'r2'", "DROP TABLE t3")
    result = start(url, at_head)
    assert (result.action, result.applied) == ("upgraded", ["r3"])
    assert "t3" in table_names(url)


def test_the_configured_version_table_is_the_one_read(url: str, at_head: Path) -> None:
    # alembic_version holds the head, but this app keeps its versions elsewhere.
    with pytest.raises(UnversionedDatabase):
        start(url, at_head, version_table="app_versions")


def test_targets_other_than_head(
    url: str, at_head: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    heads_source(debug_log)
    assert start(url, at_head, target="r3").action == "noop"
    assert heads_source(debug_log) == "cache"
    # Ahead of an older target: not the fast path's to decide, Alembic's plan says noop.
    result = start(url, at_head, target="r2")
    assert (result.action, result.from_revision) == ("noop", "r3")
    assert heads_source(debug_log) is None
    ran(executed)


def test_read_only_modes_at_head_and_behind(url: str, at_head: Path, executed: Path) -> None:
    assert start(url, at_head, mode="check").action == "noop"
    assert start(url, at_head, mode="wait", lock_timeout=0).action == "noop"
    assert ran(executed) == []
    revision(at_head, "r4", "r3", table="t4")
    with pytest.raises(PendingMigrations):
        start(url, at_head, mode="check")
    assert current_revisions(url) == {"r3"}


def test_cache_that_cannot_be_written(
    url: str, project: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    """A read-only code folder, emulated: tests run as root, whom chmod does not stop, so
    the cache's ``__pycache__`` is a plain file and every write under it fails."""
    location = migrations(project)
    cache_of(location).parent.write_text("not a folder")
    age(location)
    assert start(url, location).action == "upgraded"
    ran(executed)
    heads_source(debug_log)
    for _ in range(2):
        assert start(url, location).action == "noop"
        assert heads_source(debug_log) == "text" and ran(executed) == []
    revision(location, "r4", "r3", table="t4")
    assert start(url, location).applied == ["r4"]
    assert cache_of(location).parent.read_text() == "not a folder"


def test_a_foreign_or_broken_cache_is_ignored(url: str, at_head: Path, executed: Path) -> None:
    revision(at_head, "r4", "r3", table="t4")
    age(at_head)
    cache = cache_of(at_head)
    stale = json.loads(cache.read_text())
    assert stale["heads"] == ["r3"]
    # The old cache (r3 at head) left in place, then garbage: neither may hide r4.
    cache.write_text(json.dumps(stale))
    assert start(url, at_head).applied == ["r4"]
    execute(url, "UPDATE alembic_version SET version_num = 'r3'", "DROP TABLE t4")
    cache.write_text("{not json")
    assert start(url, at_head).applied == ["r4"]


def test_fresh_files_are_not_cached(url: str, project: Path, executed: Path) -> None:
    """Files changed in the last two seconds may change again within one timestamp tick."""
    location = migrations(project)
    assert start(url, location).action == "upgraded"
    assert start(url, location).action == "noop"
    assert not cache_of(location).exists()
    age(location)
    assert start(url, location).action == "noop"
    assert cache_of(location).is_file()


@pytest.mark.parametrize(
    "line",
    [
        "revision = 'r' + '3'",  # computed
        "branch_labels = ('main',)",
        "depends_on = 'r1'",
    ],
)
def test_files_in_doubt_are_loaded_by_alembic_then_cached(
    url: str, project: Path, executed: Path, debug_log: pytest.LogCaptureFixture, line: str
) -> None:
    """The text reader gives up; Alembic loads the scripts, and its heads are cached under the
    fingerprint taken before: the next starts execute nothing."""
    location = migrations(project)
    path = location / "versions" / "r3.py"
    name = line.split(" =")[0]
    text = path.read_text()
    kept = [x for x in text.splitlines() if not x.startswith(f"{name} =")]
    path.write_text(
        "\n".join(kept).replace("import sqlalchemy as sa", f"import sqlalchemy as sa\n{line}")
    )
    age(location)
    assert start(url, location).action == "upgraded"
    ran(executed)
    heads_source(debug_log)
    for target in ("head", "heads", "r3"):
        assert start(url, location, target=target).action == "noop"
        assert heads_source(debug_log) == "cache"
        assert ran(executed) == []


def test_async_url(url: str, at_head: Path, executed: Path) -> None:
    result = start(to_async(url), at_head)
    assert (result.action, result.from_revision) == ("noop", "r3")
    assert ran(executed) == []


def test_version_table_in_a_schema(
    tmp_path: Path, project: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    require_backend("postgresql")
    with fresh_database("postgresql", tmp_path) as database_url:
        execute(database_url, "CREATE SCHEMA fm_meta")
        location = migrations(project)
        settings = {"version_table": "app_versions", "version_table_schema": "fm_meta"}
        assert start(database_url, location, **settings).action == "upgraded"
        heads_source(debug_log)
        assert start(database_url, location, **settings).action == "noop"
        assert heads_source(debug_log) == "text"
        # The same table name in the default schema is not the one configured.
        with pytest.raises(UnversionedDatabase):
            start(database_url, location, version_table="app_versions")


@pytest.mark.parametrize("template", ["generic", "async", "pyproject"])
def test_heads_match_alembic_on_files_alembic_writes(tmp_path: Path, template: str) -> None:
    """Alembic's own templates, a branch and a merge: the same heads as Alembic's, or doubt."""
    ini, toml = str(tmp_path / "alembic.ini"), str(tmp_path / "pyproject.toml")
    cfg = Config(ini, toml_file=toml) if template == "pyproject" else Config(ini)
    command.init(cfg, str(tmp_path / "migrations"), template=template)
    cfg = Config(ini, toml_file=toml) if template == "pyproject" else Config(ini)

    def compare() -> None:
        script = ScriptDirectory.from_config(cfg)
        found = script_heads(cfg)
        assert found is not None
        assert set(found.heads) == set(script.get_heads())
        assert found.revisions == {s.revision for s in script.walk_revisions()}

    first = command.revision(cfg, "first")
    assert first is not None and not isinstance(first, list)
    command.revision(cfg, "second")
    command.revision(cfg, "branch", head=first.revision, splice=True)
    compare()
    command.merge(cfg, "heads", message="merge")
    compare()
    command.revision(cfg, "labelled", branch_label="feature")
    assert script_heads(cfg) is None


_STARTER = """
import json, sys
from fastapi_migrate import MigrateSettings, migrate
settings = MigrateSettings(database_url=sys.argv[1], script_location=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(migrate(settings).action), flush=True)
"""


def test_processes_that_wait_for_the_migration_execute_no_revision_file(
    url: str, project: Path, executed: Path
) -> None:
    """Four processes released at once on an empty database: one migrates, and only it runs
    the revision files; the others wait for its lock, then find the database at head."""
    location = migrations(project)
    env = {**os.environ, "FM_EXECUTED": str(executed)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, url, str(location)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        actions = sorted(json.loads(child.communicate(timeout=120)[0]) for child in children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert actions == ["noop", "noop", "noop", "upgraded"]
    assert ran(executed) == ["r1", "r2", "r3"]
    assert current_revisions(url) == {"r3"}


_PLAIN = b"""from alembic import op

# revision identifiers, used by Alembic.
revision = 'r2'
down_revision = 'r1'
branch_labels = None
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_PLAIN, ("r2", ("r1",))),
        (_PLAIN.replace(b"\n", b"\r\n"), ("r2", ("r1",))),
        (_PLAIN.replace(b"revision = 'r2'", b'revision: str = "r2"  # id'), ("r2", ("r1",))),
        (_PLAIN.replace(b"= 'r1'", b"= ('r1', 'r0')"), ("r2", ("r1", "r0"))),
        (_PLAIN + b"revision = 'r3'\n", None),
        (_PLAIN + b"revision += 'x'\n", None),
        (_PLAIN + b"if X:\n    down_revision = 'r0'\n", None),
        (_PLAIN + b"def f():\n    global revision\n    revision = 'x'\n", None),
        (_PLAIN + b"for revision in ('a',):\n    pass\n", None),
        (_PLAIN + b"with open('f') as revision:\n    pass\n", None),
        (_PLAIN + b"del revision\n", None),
        (_PLAIN + b"(revision := 'x')\n", None),
        (_PLAIN + b"globals()['revision'] = 'x'\n", None),
        (b"from helpers import *\n" + _PLAIN, None),
        (b"from helpers import revision\n" + _PLAIN, None),
        (b'"""\nrevision = \'r0\'\n"""\n' + _PLAIN, None),
        (_PLAIN.replace(b"'r2'", b"'r' + '2'"), None),
        (_PLAIN.replace(b"'r2'", b"'r-2'"), None),
        (_PLAIN.replace(b"= 'r1'", b"= 'r2'"), None),
        (_PLAIN.replace(b"revision = 'r2'\n", b""), None),
    ],
)
def test_the_reader_doubts_anything_not_plainly_literal(
    text: bytes, expected: tuple[str, tuple[str, ...]] | None, tmp_path: Path
) -> None:
    """Any way a module could end with other ids than its literal lines say: "don't know".

    The file under test is r2 of a folder that also holds r0 and r1 (r1 on top of r0)."""
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    for name, down in (("r0", "None"), ("r1", "'r0'")):
        (versions / f"{name}.py").write_text(f"revision = '{name}'\ndown_revision = {down}\n")
    (versions / "r2.py").write_bytes(text)
    cfg = Config()
    cfg.set_main_option("script_location", str(tmp_path / "migrations"))
    found = script_heads(cfg)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found.heads == (expected[0],)
        assert found.revisions == {"r0", "r1", "r2"}


# Run migrate() with the code folder on a real read-only mount: a private mount namespace
# (``unshare``), so the host never sees the mount and nothing needs unmounting.
_READ_ONLY_START = """\
import json, logging, sys
from fastapi_migrate import MigrateSettings, migrate
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("fastapi_migrate").addHandler(Keep())
logging.getLogger("fastapi_migrate").setLevel(logging.DEBUG)
result = migrate(MigrateSettings(database_url=sys.argv[1], script_location=sys.argv[2]))
fast = [m.split("heads from the ")[1].split()[0] for m in records if m.startswith("no-op start:")]
print(json.dumps({"action": result.action, "applied": result.applied, "heads": fast}))
"""


def _read_only_start(url: str, source: Path, mount: Path, executed: Path) -> dict[str, object]:
    script = (
        f'mount --bind "{source}" "{mount}" && mount -o remount,bind,ro "{mount}" && '
        f'touch "{mount}/probe" 2>/dev/null && echo "still writable" >&2 && exit 3; '
        f'exec "{sys.executable}" -c "$0" "$1" "$2"'
    )
    run = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, _READ_ONLY_START, url, str(mount / "migrations")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FM_EXECUTED": str(executed)},
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_a_real_read_only_code_folder(url: str, project: Path, executed: Path) -> None:
    """No cache, no bytecode can be written: the heads come from the files' text, never wrong."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespaces here (unshare -rm)")
    location = migrations(project)
    age(location)
    mount = project.parent / "read-only"
    mount.mkdir()

    def start_read_only() -> dict[str, object]:
        return _read_only_start(url, project, mount, executed)

    assert start_read_only()["applied"] == ["r1", "r2", "r3"]
    ran(executed)
    assert start_read_only() == {"action": "noop", "applied": [], "heads": ["text"]}
    assert ran(executed) == []
    revision(location, "r4", "r3", table="t4")
    age(location)
    assert start_read_only()["applied"] == ["r4"]
    # A merge of two new branches, added while the folder stays read-only.
    revision(location, "r5a", "r4", table="t5a")
    revision(location, "r5b", "r4", table="t5b")
    revision(location, "r6", ("r5a", "r5b"), table="t6")
    age(location)
    assert sorted(start_read_only()["applied"]) == ["r5a", "r5b", "r6"]  # type: ignore[arg-type]
    assert start_read_only()["heads"] == ["text"]
    assert current_revisions(url) == {"r6"}
    assert not list(location.rglob("__pycache__")), "something was written to the code folder"
