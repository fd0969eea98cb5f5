"""What the package ships, as it is installed: .ci/run runs the suite against the built wheel.

There FM_TEST_INSTALLED=1 is set: the suite must be importing ``fastapi_migrate`` from
site-packages, not from a checkout, and the wheel's metadata is checked; the other checks hold
for any install, editable included.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import sysconfig
from pathlib import Path

import pytest

import fastapi_migrate

from .cli_helpers import cli, console_script, ok

DIST = "fastapi-migrate-on-startup"
PACKAGE = Path(fastapi_migrate.__file__).resolve().parent


def installed_wheel() -> None:
    """Skip unless the suite runs against an installed wheel: an editable install's metadata
    is as old as its last ``pip install -e``, and its code is the checkout's."""
    if os.environ.get("FM_TEST_INSTALLED") != "1":
        pytest.skip("only against the installed wheel (.ci/run sets FM_TEST_INSTALLED=1)")


def test_the_installed_wheel_is_what_the_suite_imports() -> None:
    installed_wheel()
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert PACKAGE.is_relative_to(purelib), f"fastapi_migrate imported from {PACKAGE}"
    shipped = {str(f) for f in metadata.files(DIST) or ()}
    for name in ("fastapi_migrate/py.typed", "fastapi_migrate/pytest_plugin.py"):
        assert name in shipped
    assert any(name.startswith("fastapi_migrate/templates/") for name in shipped)
    assert any(name.endswith("licenses/LICENSE") for name in shipped)


def test_package_data_ships_beside_the_code() -> None:
    assert (PACKAGE / "py.typed").is_file()
    templates = [p for p in (PACKAGE / "templates").rglob("*") if p.is_file()]
    assert any(p.name == "env.py" for p in templates)
    assert any(p.name == "script.py.mako" for p in templates)


def test_metadata_declares_the_tested_floors_and_the_license() -> None:
    installed_wheel()
    meta = metadata.metadata(DIST)
    assert meta["License-Expression"] == "MIT"
    requires = meta.get_all("Requires-Dist") or []
    assert "pydantic-settings>=2.4" in requires
    assert "Typing :: Typed" in (meta.get_all("Classifier") or [])


def test_entry_points_name_the_console_script_and_the_pytest_plugin(
    request: pytest.FixtureRequest,
) -> None:
    scripts = metadata.entry_points(group="console_scripts", name="fastapi-migrate")
    assert [e.value for e in scripts] == ["fastapi_migrate.cli:console"]
    plugins = metadata.entry_points(group="pytest11", name="fastapi_migrate")
    assert [e.value for e in plugins] == ["fastapi_migrate.pytest_plugin"]
    # Loaded through that entry point: this run names no -p for it.
    assert request.config.pluginmanager.get_plugin("fastapi_migrate") is not None


def test_console_script_reports_the_installed_version(tmp_path: Path) -> None:
    result = ok(cli(tmp_path, "--version", program=(console_script(),)))
    assert result.stdout.split() == ["fastapi-migrate", metadata.version(DIST)]
