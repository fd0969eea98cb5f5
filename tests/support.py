"""Helpers the tests share: real migration folders, fresh databases, real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import fastapi_migrate

TEMPLATES = Path(fastapi_migrate.__file__).parent / "templates"

PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_SERVER = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


def to_async(url: str) -> str:
    """The same database through its asyncio driver."""
    parsed = sa.make_url(url)
    return parsed.set(drivername=ASYNC_DRIVERS[parsed.get_backend_name()]).render_as_string(
        hide_password=False
    )


def write_migrations(
    root: Path,
    revisions: int = 3,
    *,
    env: str = "fastapi",
    folder: str = "migrations",
) -> Path:
    """A migrations folder under ``root`` with ``revisions`` linear revisions r1..rN.

    ``env``: ``fastapi`` (fastapi-migrate's env.py), ``generic`` or ``async`` (Alembic's stock
    templates, written by ``alembic init`` itself, with an alembic.ini beside them).
    Revision rK creates table ``tK`` (id, name).
    """
    location = root / folder
    if env == "fastapi":
        (location / "versions").mkdir(parents=True)
        for name in ("env.py", "script.py.mako"):
            (location / name).write_text((TEMPLATES / "fastapi" / name).read_text())
    else:
        command.init(Config(str(root / "alembic.ini")), str(location), template=env)
    for k in range(1, revisions + 1):
        add_revision(location, f"r{k}", f"r{k - 1}" if k > 1 else None, table=f"t{k}")
    return location


def add_revision(
    location: Path,
    revision: str,
    down_revision: str | Sequence[str] | None,
    *,
    table: str | None = None,
    upgrade: str | None = None,
    downgrade: str | None = None,
) -> Path:
    """Write one revision file; by default it creates (and drops) ``table``."""
    if upgrade is None:
        upgrade = (
            f"op.create_table({table!r}, sa.Column('id', sa.Integer, primary_key=True), "
            "sa.Column('name', sa.String(50)))"
        )
        downgrade = f"op.drop_table({table!r})"
    body = textwrap.dedent(
        """\
        from alembic import op
        import sqlalchemy as sa

        revision = {revision!r}
        down_revision = {down!r}
        branch_labels = None
        depends_on = None


        def upgrade():
        {upgrade}


        def downgrade():
        {downgrade}
        """
    ).format(
        revision=revision,
        down=tuple(down_revision) if isinstance(down_revision, list) else down_revision,
        upgrade=textwrap.indent(upgrade, "    "),
        downgrade=textwrap.indent(downgrade or "pass", "    "),
    )
    path = location / "versions" / f"{revision}.py"
    path.write_text(body)
    return path


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def current_revisions(url: str, version_table: str = "alembic_version") -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(version_table):
                return set()
            return {r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {version_table}"))}
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> list[list[tuple[object, ...]]]:
    """Run statements in one transaction; the rows of each."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    out: list[list[tuple[object, ...]]] = []
    try:
        with engine.begin() as conn:
            for statement in statements:
                result = conn.execute(sa.text(statement))
                out.append([tuple(r) for r in result] if result.returns_rows else [])
    finally:
        engine.dispose()
    return out


# -- fresh databases on the servers ------------------------------------------------------------


def server_problem(server_url: str) -> str | None:
    """Why the server cannot be used, or ``None`` when it answers."""
    engine = sa.create_engine(
        server_url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return None
    except Exception as error:  # any failure means: cannot test against it
        return (
            f"{sa.make_url(server_url).render_as_string(hide_password=True)}: {error}".splitlines()[
                0
            ]
        )
    finally:
        engine.dispose()


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database on ``backend``, dropped afterwards; yields its sync URL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'db-{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    server = PG_SERVER if backend == "postgresql" else MARIADB_SERVER
    name = f"fm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
        yield url
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


# -- real processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no inherited DATABASE_URL/MIGRATE_* surprises."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_") and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def start_uvicorn(
    app: str, cwd: Path, env: dict[str, str], port: int | None = None, *extra_args: str
) -> tuple[subprocess.Popen[str], int]:
    """Start ``uvicorn app`` in ``cwd``; returns the process and its port."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra_args,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, port


def wait_http(port: int, path: str, proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """Poll until the server answers ``path``; its status code. Fails if the process exits."""
    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            return httpx2.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
        except httpx2.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"server on port {port} did not answer within {timeout}s")


def stop(proc: subprocess.Popen[str]) -> str:
    """Terminate the process; everything it printed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is None:
        return ""
    with proc.stdout:
        return proc.stdout.read()
