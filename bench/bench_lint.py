"""``fastapi-migrate lint base:head`` against ``alembic upgrade base:head --sql``, whole
processes, side by side.

Both render every revision of the same history offline for PostgreSQL: Alembic's command runs
``env.py`` once over the whole range and prints the SQL; lint renders each revision on its own
(Alembic's own offline context, no ``env.py``), traces what it executes, checks every statement
and reads the table sizes from the database (a fresh one, as on CI). The history: N revisions
as ``alembic revision`` writes them (``bench/_common.write_history``), every fourth one also
adding an index and a NOT NULL column to the table of the revision before it, so that lint's
rules have work (none of it a finding: those tables are new in ``base:head``).

The timing is ``farm-bench`` (the machine's whole-process timer): A and B run in turn and the
ratio A/B is taken pair by pair, so a machine that slows down mid-run moves both. Quote the
median ratio; below 1.0 lint is faster.

``--app-env``: the history's ``env.py`` first imports the app's settings, a pydantic-settings
class, as a FastAPI project's ``env.py`` does to read its URL (``from app.core.config import
settings``). Alembic's command runs ``env.py``; lint never does.

Run: ``python bench/bench_lint.py [--revisions 200] [--runs 9] [--app-env]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, child_env, fresh_database, machine, revision_id, write_history

_EXTRA = """
    op.create_index("ix_t{prev}_name", "t{prev}", ["name"])
    op.add_column("t{prev}", sa.Column("flag", sa.Boolean(), nullable=False))
"""


_APP_SETTINGS = """\
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")
    DATABASE_URL: str = "sqlite://"


settings = Settings()
"""


def prepare(root: Path, revisions: int, *, app_env: bool = False) -> None:
    """The history, with work for the rules in every fourth revision; ``app_env``: its env.py
    imports the app's settings first."""
    location = write_history(root, revisions)
    if app_env:
        (root / "app_settings.py").write_text(_APP_SETTINGS)
        env_py = location / "env.py"
        head = f"import sys\nsys.path.insert(0, {str(root)!r})\nfrom app_settings import settings\n"
        env_py.write_text(head + env_py.read_text())
    for k in range(2, revisions + 1, 4):
        path = location / "versions" / f"{revision_id(k)}_add_table_t{k}.py"
        text = path.read_text()
        marker = '        sa.Column("name", sa.String(50)),\n    )\n'
        path.write_text(text.replace(marker, marker + _EXTRA.format(prev=k - 1), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--app-env", action="store_true")
    args = parser.parse_args()
    if shutil.which("farm-bench") is None:
        sys.exit("farm-bench is not on PATH: it is the machine's whole-process timer")
    print(machine())
    with tempfile.TemporaryDirectory() as tmp, fresh_database("postgresql", Path(tmp)) as url:
        root = Path(tmp) / "project"
        root.mkdir()
        prepare(root, args.revisions, app_env=args.app_env)
        ini = root / "alembic.ini"
        ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", url))
        env = child_env(DATABASE_URL=url, PYTHONPATH=str(ROOT))
        alembic = shutil.which("alembic", path=str(Path(sys.executable).parent)) or "alembic"
        lint = [sys.executable, "-m", "fastapi_migrate", "lint", "base:head"]
        check = subprocess.run(lint, cwd=root, env=env, capture_output=True, text=True)
        print(f"lint: exit {check.returncode}, {check.stdout.strip().splitlines()[-1]}")
        bench = [
            "farm-bench",
            "-n",
            str(args.runs),
            "--timeout",
            "1200",
            "--vs",
            f"{alembic} upgrade base:head --sql",
            "--",
            *lint,
        ]
        print(f"A: {shlex.join(lint[1:])}\nB: alembic upgrade base:head --sql")
        env_py = "env.py imports the app's settings" if args.app_env else "Alembic's generic env.py"
        print(f"{args.revisions} revisions, PostgreSQL (a fresh database), {env_py}", flush=True)
        subprocess.run(bench, cwd=root, env={**os.environ, **env}, check=False)


if __name__ == "__main__":
    main()
