"""Print pip constraints pinning every direct dependency to its declared floor (``>=X`` -> ``==X``).

pip has no "lowest" resolver: these pins make it install the floors of ``dependencies`` and of
the user-facing extras (not ``dev``: the test tools stay current). Used by .ci/run and the
GitHub workflow's floors job:  python .ci/floors.py > floors.txt; pip install -c floors.txt ...
Runs on Python 3.11+ (tomllib) with ``packaging`` (which pytest brings).
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

# Not floors of ours, but what the old Starlette of the fastapi floor needs from a test tool:
# its TestClient passes ``app=`` to httpx.Client, which httpx 0.28 removed.
TEST_TOOLS = ["httpx<0.28"]


def main() -> int:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra != "dev":
            texts += items
    for text in texts:
        requirement = Requirement(text)
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(floors) != 1:
            print(f"{text}: needs exactly one '>=' floor", file=sys.stderr)
            return 1
        print(f"{requirement.name}=={floors[0]}")
    print("\n".join(TEST_TOOLS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
