"""Helpers the tests share: real migration folders, fresh databases, real processes."""

from __future__ import annotations

import itertools
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
from typing import Any

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


class HarnessError(Exception):
    """The test's own machinery failed (a socket could not be bound, a process could not be
    spawned or exec'd, a server could not use the socket it was given): no finding about
    fastapi-migrate, and reported apart from migration failures."""


_NAMES = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A name for a server-wide object (database, role) or a file: unique by construction.

    ``pid`` and a per-process counter make it unique among every process running on this
    machine (two live processes never share a pid); the random tail only keeps it apart from a
    leftover of a dead process that once had the same pid. Lowercase, digits and ``_``: a valid
    unquoted identifier on PostgreSQL and MariaDB (at most 63 characters with a short prefix).
    """
    return f"{prefix}_{os.getpid()}_{next(_NAMES)}_{uuid.uuid4().hex[:8]}"


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


# The first lines of a test revision whose code has effects outside ``op`` (a trace file, a
# pause, a sleep): the start's lint pre-check (MIGRATE_UNSAFE=warn, the default) runs every
# pending revision's ``upgrade()`` once offline to see its SQL, and those effects must happen
# only when it really runs.
ONLINE_ONLY = "if op.get_context().as_sql:\n    return  # the lint pre-check's offline rendering\n"


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
        yield f"sqlite:///{tmp_path / (unique_name('db') + '.sqlite')}"
        return
    server = PG_SERVER if backend == "postgresql" else MARIADB_SERVER
    name = unique_name("fm_test")
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


def listening_socket() -> socket.socket:
    """A TCP socket bound to a port the kernel picks on 127.0.0.1, already listening.

    A server started on it (``uvicorn --fd``) never binds anything itself: no other process can
    take its port between the choice and the bind, because there is no such moment.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise HarnessError(f"could not bind a listening socket on 127.0.0.1: {error}") from error
    return sock


_REFUSING: list[socket.socket] = []


def refused_port() -> int:
    """A port on 127.0.0.1 where a connection is refused, by construction: this process keeps a
    socket bound to it without listening (for its whole life), so nothing else can listen
    there and the kernel gives it to no outgoing connection."""
    if not _REFUSING:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
        except OSError as error:
            sock.close()
            raise HarnessError(f"could not bind a socket on 127.0.0.1: {error}") from error
        _REFUSING.append(sock)
    return int(_REFUSING[0].getsockname()[1])


# What a process prints when the harness failed it, not the code under test.
HARNESS_SIGNS = (
    "Address already in use",
    "error while attempting to bind",
    "[Errno 9] Bad file descriptor",
    "[Errno 24] Too many open files",
    "[Errno 12] Cannot allocate memory",
    "No module named uvicorn",
    "No module named fastapi_migrate",
)


def harness_cause(output: str) -> str | None:
    """The line of ``output`` that shows a harness failure (bind, fd, resources, exec), if any."""
    for line in output.splitlines():
        if any(sign in line for sign in HARNESS_SIGNS):
            return line.strip()
    return None


def popen(name: str, args: list[str], **kwargs: object) -> subprocess.Popen[Any]:
    """``subprocess.Popen``; a process that cannot be spawned or exec'd is a ``HarnessError``."""
    try:
        return subprocess.Popen(args, **kwargs)  # type: ignore[call-overload, no-any-return]
    except (OSError, subprocess.SubprocessError) as error:
        raise HarnessError(f"could not spawn {name} ({' '.join(args[:4])}): {error}") from error


def uvicorn_args(app: str, fd: int, *extra_args: str) -> list[str]:
    """``uvicorn app`` serving on the listening socket ``fd`` (also with ``--workers N``: the
    parent hands the same socket to every worker)."""
    return [sys.executable, "-m", "uvicorn", app, "--fd", str(fd), *extra_args]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no inherited DATABASE_URL/MIGRATE_* surprises."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_") and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def start_uvicorn(
    app: str, cwd: Path, env: dict[str, str], *extra_args: str
) -> tuple[subprocess.Popen[str], int]:
    """Start ``uvicorn app`` in ``cwd`` on a socket already listening; the process and its port.

    The socket is bound and listening before uvicorn starts (``--fd``, the descriptor passed
    with ``pass_fds``), so the port cannot be taken in between. A request sent before the app
    is up waits in the socket's backlog instead of being refused.
    """
    sock = listening_socket()
    try:
        port = int(sock.getsockname()[1])
        proc = popen(
            f"uvicorn {app}",
            uvicorn_args(app, sock.fileno(), *extra_args),
            cwd=cwd,
            env=env,
            pass_fds=[sock.fileno()],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        sock.close()  # the child has its own copy; the port stays open while it runs
    return proc, port


def wait_http(port: int, path: str, proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """Poll until the server answers ``path``; its status code. Fails if the process exits."""
    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            cause = harness_cause(output)
            if cause:
                raise HarnessError(f"server could not run: {cause}\n{output}")
            raise AssertionError(f"server exited with {proc.returncode}: {output}")
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
