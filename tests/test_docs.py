"""The docs keep their promises: every Python example is a file under docs/examples that a page
includes and a test runs, no page holds Python of its own, the README's code is the examples',
and the settings table names every setting. (``mkdocs build --strict``, in .ci/run and the
workflow, checks every link and anchor.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastapi_migrate import MigrateSettings

REPO = Path(__file__).parent.parent
DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^( *)```python[^\n]*\n(.*?)^\1```", re.M | re.S)
INCLUDE = re.compile(r'--8<-- "([^"]+)"')
# The tests that run each example folder (tests/test_docs_examples.py, tests/test_recipes.py).
RUN_BY = {
    "one_line": "test_docs_examples.py::test_the_one_line",
    "getting_started": "test_docs_examples.py::test_getting_started",
    "settings": "test_docs_examples.py::test_the_apps_own_settings_and_env_py",
    "deploying": "test_docs_examples.py::test_health_router_and_seed_with_two_workers",
    "trees": "test_docs_examples.py::test_several_trees",
    "autocommit": "test_docs_examples.py::test_autocommit_block",
    "lint": "test_docs_examples.py::test_lint_and_its_suppression_comment",
    "testing/first_tests": "test_docs_examples.py::test_first_tests",
    "testing/session_scoped": "test_docs_examples.py::test_session_scoped_suite",
    "testing/checks": "test_docs_examples.py::test_checks_for_your_migrations",
    "testing/get_db_override": "test_recipes.py::test_recipe",
    "testing/engine_at_import": "test_recipes.py::test_recipe",
    "testing/engine_in_lifespan": "test_recipes.py::test_recipe",
    "testing/async_session": "test_recipes.py::test_recipe",
    "testing/test_items.py": "test_recipes.py::test_recipe",
}


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def included() -> set[str]:
    return {path for page in PAGES for path in INCLUDE.findall(page.read_text())}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_has_no_python_of_its_own(page: Path) -> None:
    """Python in a page is an included file (a test runs it), never typed into the page."""
    for _, body in FENCE.findall(page.read_text()):
        assert INCLUDE.fullmatch(body.strip()), f"{page.name}: inline Python\n{body}"


def test_every_example_is_included_and_run() -> None:
    shown = included()
    for path in example_files():
        name = path.relative_to(REPO).as_posix()
        assert name in shown, f"{name}: no page includes it"
        folder = path.relative_to(EXAMPLES).as_posix()
        runner = next(
            (t for k, t in RUN_BY.items() if folder == k or folder.startswith(k + "/")), None
        )
        assert runner, f"{name}: no test runs it (RUN_BY)"
        file, _, test = runner.partition("::")
        assert f"def {test}(" in (REPO / "tests" / file).read_text(), runner


def test_every_include_exists() -> None:
    for path in included():
        assert (REPO / path.split(":")[0]).is_file(), path


def test_the_readme_python_is_the_examples() -> None:
    """The README, read on GitHub, cannot include files: its Python is an example's, verbatim."""
    examples = [p.read_text() for p in example_files() if p.suffix == ".py"]
    for _, body in FENCE.findall((REPO / "README.md").read_text()):
        assert any(body in text for text in examples), f"README: not an example file\n{body}"


def test_the_settings_table_names_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("[start:settings]")[1].split("[end:settings]")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", table, re.M))
    fields = set(MigrateSettings.model_fields)
    assert set(rows.values()) == fields
    for variable, field in rows.items():
        expected = field.upper() if field.endswith("database_url") else f"MIGRATE_{field.upper()}"
        assert variable == expected, (variable, field)
    assert '--8<-- "README.md:settings"' in (DOCS / "settings.md").read_text()
