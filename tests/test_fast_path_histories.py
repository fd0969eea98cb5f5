"""The no-op start on histories as real projects write them: dotted revision ids, and revision
files whose text the reader cannot vouch for. Each revision file appends its id to a log when
Alembic executes it: a no-op start that executes none is proven by an empty log."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from fastapi_migrate.glue.heads import script_heads

from . import test_fast_path as fast_path
from .support import current_revisions, table_names, write_migrations
from .test_fast_path import age, cache_of, heads_source, ran, revision, start

# The fixtures of the fast path's tests: the database, the execution log, the debug log.
url, executed, debug_log = fast_path.url, fast_path.executed, fast_path.debug_log

_DOTTED = ["v1.0.0", "v2.0.0.a", "v3.0.0.a", "v3.0.1"]


def dotted(project: Path) -> Path:
    location = write_migrations(project, 0)
    for number, rev in enumerate(_DOTTED):
        down = _DOTTED[number - 1] if number else None
        revision(location, rev, down, table=f"t{number}")
    return location


def test_dotted_revision_ids_are_read_without_executing_a_file(
    url: str, project: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    location = dotted(project)
    age(location)
    assert start(url, location).applied == _DOTTED
    ran(executed)
    heads_source(debug_log)
    cache_of(location).unlink()  # written by that start: read the text again

    for source in ("text", "cache"):
        result = start(url, location)
        assert (result.action, result.to_revision) == ("noop", "v3.0.1")
        assert ran(executed) == []
        assert heads_source(debug_log) == source
    assert start(url, location, target="v3.0.1").action == "noop"  # the head, by its id
    assert ran(executed) == []


def test_dotted_ids_give_alembics_heads(project: Path, executed: Path) -> None:
    location = dotted(project)
    revision(location, "v2.1", "v2.0.0.a", table="branch")
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    found = script_heads(cfg)
    script = ScriptDirectory.from_config(cfg)
    assert found is not None
    assert set(found.heads) == set(script.get_heads()) == {"v3.0.1", "v2.1"}
    assert found.revisions == {s.revision for s in script.walk_revisions()}


# Lines the text reader cannot vouch for, as found in real histories.
_DYNAMIC = {
    "r2": "sa = __import__('sqlalchemy')",
    "r3": "globals()['HELPER'] = 'app.helpers'",
    "r4": "from os.path import *  # helpers imported from the app",
}


def dynamic(project: Path) -> Path:
    location = write_migrations(project, 0)
    for k in range(1, 5):
        path = revision(location, f"r{k}", f"r{k - 1}" if k > 1 else None, table=f"t{k}")
        if f"r{k}" in _DYNAMIC:
            path.write_text(_DYNAMIC[f"r{k}"] + "\n" + path.read_text())
    return location


def doubts(caplog: pytest.LogCaptureFixture) -> int:
    """How many times a start read a file and gave up on it (each read is logged)."""
    count = sum("cannot read" in r.getMessage() for r in caplog.records)
    caplog.clear()
    return count


def test_a_history_with_dynamic_code_is_loaded_once_then_cached(
    url: str, project: Path, executed: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    location = dynamic(project)
    age(location)
    assert start(url, location).applied == ["r1", "r2", "r3", "r4"]
    assert doubts(debug_log) == 1  # the text was read once in that start, then Alembic loaded
    ran(executed)

    for _ in range(2):
        result = start(url, location)
        assert (result.action, result.to_revision) == ("noop", "r4")
        assert ran(executed) == []
        assert heads_source(debug_log) == "cache"

    # A change: the first start after it pays, once; the next ones execute nothing.
    revision(location, "r5", "r4", table="t5").write_text(
        "globals()\n" + (location / "versions" / "r5.py").read_text()
    )
    assert start(url, location).applied == ["r5"]
    assert doubts(debug_log) == 1
    assert "t5" in table_names(url) and current_revisions(url) == {"r5"}
    age(location)  # deployed: the files are no longer fresh (changed stats: a cache miss)
    ran(executed)
    assert start(url, location).action == "noop"
    assert sorted(ran(executed)) == ["r1", "r2", "r3", "r4", "r5"]
    assert doubts(debug_log) == 1
    assert start(url, location).action == "noop"
    assert ran(executed) == []
    assert heads_source(debug_log) == "cache"
    assert cache_of(location).exists()
