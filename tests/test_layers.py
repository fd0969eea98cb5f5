"""The package's folders import each other one way only, the way a start flows.

foundation -> backends -> glue, lint -> engine -> web, cli, testing. A folder may import its own
modules and those of the layers below it, never a layer above nor a neighbour on its own level:
every import counts, also those inside functions and under ``TYPE_CHECKING``. The package's
top-level modules (``__init__``, ``pytest_plugin``, ``alembic_env``, ``__main__``) are entry
points and may import anything; nothing in a folder imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fastapi_migrate

PACKAGE = Path(fastapi_migrate.__file__).parent

LAYERS: dict[str, int] = {
    "foundation": 0,
    "backends": 1,
    "glue": 2,
    "lint": 2,
    "engine": 3,
    "web": 4,
    "cli": 4,
    "testing": 4,
}
"""Each folder's layer, from the bottom. ``templates`` holds files for a user's project."""


def imports_of(path: Path, text: str | None = None) -> set[str]:
    """The package modules the module at ``path`` imports (its text, or ``text`` as if it were
    there), as dotted names under ``fastapi_migrate``."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module
    package = package if path.name == "__init__.py" else package.rsplit(".", 1)[0]
    found: set[str] = set()
    source = path.read_text() if text is None else text
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" for a in node.names} if node.module is None else {base}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastapi_migrate"):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fastapi_migrate")}
    return found


def folder_of(module: str) -> str | None:
    """``fastapi_migrate.engine.lock`` -> ``engine``; None for a top-level module."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    candidate = parts[1]
    return candidate if (PACKAGE / candidate).is_dir() else None


def test_every_folder_has_a_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders - {"templates"} == set(LAYERS)


def test_folders_import_only_layers_below_them() -> None:
    wrong: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = folder_of(".".join(path.relative_to(PACKAGE.parent).parts))
        if source is None or source == "templates":
            continue
        for target in sorted(imports_of(path)):
            into = folder_of(target)
            if into == source:
                continue
            if into is None:
                wrong.append(f"{path.relative_to(PACKAGE)} imports the entry point {target}")
            elif LAYERS[into] >= LAYERS[source]:
                wrong.append(
                    f"{path.relative_to(PACKAGE)} ({source}, layer {LAYERS[source]}) imports "
                    f"{target} ({into}, layer {LAYERS[into]})"
                )
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_an_upward_import() -> None:
    """The check itself: a foundation module importing the engine inside a function counts."""
    text = "def f():\n    from ..engine.lock import migration_lock\n"
    imports = imports_of(PACKAGE / "foundation" / "probe.py", text)
    assert imports == {"fastapi_migrate.engine.lock"}
    assert LAYERS[folder_of("fastapi_migrate.engine.lock") or ""] > LAYERS["foundation"]
