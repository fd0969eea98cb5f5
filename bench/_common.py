"""What the benchmarks share: a history of N one-table revisions, fresh databases, the machine.

Benchmarks print ratios measured side by side in one run: on a shared, noisy machine absolute
times alone prove nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import alembic
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import PG_SERVER, fresh_database  # noqa: E402

__all__ = ["PG_SERVER", "fresh_database"]

_REVISION = '''\
"""add table t{k}

Revision ID: {rev}
Revises: {down_id}
Create Date: 2024-01-01 00:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = {rev!r}
down_revision: Union[str, None] = {down!r}
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "t{k}",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50)),
    )


def downgrade() -> None:
    op.drop_table("t{k}")
'''


def revision_id(k: int) -> str:
    return f"{k:04d}abcdef01"


def write_history(root: Path, revisions: int) -> Path:
    """``root/migrations`` with Alembic's stock ``generic`` env.py and ``revisions`` linear
    revisions written as ``alembic revision`` writes them; revision k creates table tk."""
    location = root / "migrations"
    with contextlib.redirect_stdout(io.StringIO()):
        command.init(Config(str(root / "alembic.ini")), str(location), template="generic")
    for k in range(1, revisions + 1):
        down = revision_id(k - 1) if k > 1 else None
        text = _REVISION.format(k=k, rev=revision_id(k), down=down, down_id=down or "")
        (location / "versions" / f"{revision_id(k)}_add_table_t{k}.py").write_text(text)
    return location


def metadata_for(revisions: int) -> sa.MetaData:
    """The models the history builds: what ``empty_database=create_all`` creates."""
    metadata = sa.MetaData()
    for k in range(1, revisions + 1):
        sa.Table(
            f"t{k}",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50)),
        )
    return metadata


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def machine() -> str:
    """nproc, Python, Alembic, SQLAlchemy and (when reachable) PostgreSQL versions."""
    pg = "unreachable"
    try:
        engine = sa.create_engine(PG_SERVER, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            pg = str(conn.exec_driver_sql("SHOW server_version").scalar())
        engine.dispose()
    except Exception as error:  # the machine line must not stop a SQLite-only run
        pg = f"unreachable ({type(error).__name__})"
    return (
        f"nproc {os.cpu_count()}, {platform.machine()}, Python {platform.python_version()}, "
        f"Alembic {alembic.__version__}, SQLAlchemy {sa.__version__}, PostgreSQL {pg}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def run_child(code: str, args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run ``python -c code args`` in ``cwd`` (a folder with no alembic.ini or .env that
    settings could pick up); its last stdout line. Fails loudly on error."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no DATABASE_URL/MIGRATE_* from outside."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MIGRATE_") and k not in ("DATABASE_URL", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(extra)
    return env


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, pasted as is into docs/performance.md."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
