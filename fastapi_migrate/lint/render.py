"""What each revision will execute, rendered offline one revision at a time.

Each revision's ``upgrade()`` runs against Alembic's offline ``MigrationContext`` of the URL's
dialect (``as_sql``, nothing is connected): every statement Alembic's operations and raw
``op.execute`` SQL send to the database passes through the implementation's ``_exec``, which is
traced here to record the statement, the revision file's line that issued it, and whether it
runs inside a transaction (``autocommit_block()`` is seen). Batch mode is traced as well: where
Alembic would rebuild the table (SQLite), that is recorded instead of failing for want of a
connection to reflect the table.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Literal

from alembic.operations import Operations
from alembic.operations.base import BatchOperations
from alembic.operations.batch import BatchOperationsImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from sqlalchemy import make_url
from sqlalchemy.schema import CreateTable
from sqlalchemy.util import immutabledict


@dataclass
class Executed:
    """One call that sends SQL: its text, the revision file's line, inside a transaction."""

    sql: str
    line: int | None
    in_transaction: bool


@dataclass
class Rendered:
    """One revision, rendered: what it executes, the tables batch mode rebuilds, and why the
    rendering stopped early (a revision that reads the database: ``op.get_bind()``)."""

    revision: Script
    executed: list[Executed] = field(default_factory=list)
    rebuilds: list[tuple[str, int | None]] = field(default_factory=list)
    problem: str | None = None
    problem_line: int | None = None


def _create_table_head(construct: CreateTable) -> str:
    """``CREATE TABLE`` and the table's name, as the rules read it (quoted: any name passes)."""
    table = construct.element
    name = '"' + table.name.replace('"', '""') + '"'
    if table.schema:
        name = '"' + table.schema.replace('"', '""') + '".' + name
    return f"CREATE TABLE {name} ()"


class _Context(MigrationContext):
    """Knows whether a statement runs inside ``autocommit_block()``."""

    in_autocommit = False

    @contextmanager
    def autocommit_block(self) -> Iterator[None]:
        with super().autocommit_block():
            was, self.in_autocommit = self.in_autocommit, True
            try:
                yield
            finally:
                self.in_autocommit = was


class _Batch(BatchOperationsImpl):
    """Batch mode that reports a rebuild instead of reflecting the table."""

    renderer: Renderer

    def flush(self) -> None:
        if self._should_recreate():
            self.renderer.rebuilt(self.table_name)
        for name, args, kwargs in self.batch:
            try:  # the statement each operation would run on its own, where it has one
                getattr(self.operations.impl, name)(*args, **kwargs)
            except Exception:  # SQLite has no ALTER for it: the rebuild is reported
                continue


_EMPTY: Any = immutabledict()


class _Operations(Operations):
    renderer: Renderer

    @contextmanager
    def batch_alter_table(
        self,
        table_name: str,
        schema: str | None = None,
        recreate: Literal["auto", "always", "never"] = "auto",
        partial_reordering: list[tuple[str, ...]] | None = None,
        copy_from: Any = None,
        table_args: tuple[Any, ...] = (),
        table_kwargs: Any = _EMPTY,
        reflect_args: tuple[Any, ...] = (),
        reflect_kwargs: Any = _EMPTY,
        naming_convention: dict[str, str] | None = None,
    ) -> Iterator[BatchOperations]:
        impl = _Batch(  # type: ignore[no-untyped-call]
            self,
            table_name,
            schema,
            recreate,
            copy_from,
            table_args,
            table_kwargs,
            reflect_args,
            reflect_kwargs,
            naming_convention,
            partial_reordering,
        )
        impl.renderer = self.renderer
        yield BatchOperations(self.migration_context, impl=impl)
        impl.flush()


# Alembic registers ``op``'s proxies per class: the subclass installs the same ones.
Operations._setups.setdefault(_Operations, Operations._setups[Operations])


class Renderer:
    """Renders revisions for one dialect; one offline context for all of them."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.buffer = io.StringIO()
        # What MigrationContext.configure(dialect_name=...) does, for the subclass (configure
        # always builds the base class); the dialect class only, no driver imported.
        sa_dialect = make_url(f"{dialect}://").get_dialect()()
        opts = {"as_sql": True, "output_buffer": self.buffer, "literal_binds": True}
        context = _Context(sa_dialect, None, opts, None)
        self.context = context
        self.transactional = bool(context.impl.transactional_ddl)
        self._current: Rendered | None = None
        self._paths: set[str] = set()
        original = context.impl._exec

        def traced(construct: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(construct, CreateTable):
                # A new table: nothing a rule looks at but its name (compiling every column of
                # every table was a fifth of a lint of 200 revisions).
                result, sql = None, _create_table_head(construct)
            else:
                result = original(construct, *args, **kwargs)
                sql = self.buffer.getvalue()
            self.buffer.seek(0)
            self.buffer.truncate(0)
            if self._current is not None:
                in_transaction = self.transactional and not self.context.in_autocommit
                self._current.executed.append(Executed(sql, self._line(), in_transaction))
            return result

        context.impl._exec = traced  # type: ignore[method-assign]
        self.operations = _Operations(context)
        self.operations.renderer = self

    def render(self, revision: Script) -> Rendered:
        """What ``revision``'s ``upgrade()`` executes."""
        rendered = Rendered(revision)
        self._current = rendered
        # The file names its frames run under (no resolve(): it costs a system call per path
        # component, for each revision): the path, and the upgrade's code, the same but for a
        # sourceless (.pyc) revision.
        code = getattr(getattr(revision.module, "upgrade", None), "__code__", None)
        names = (revision.path, getattr(code, "co_filename", None))
        self._paths = {name for name in names if isinstance(name, str) and name}
        self.context.in_autocommit = False
        self.operations._install_proxy()
        try:
            revision.module.upgrade()
        except Exception as error:
            rendered.problem = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            rendered.problem_line = self._line_in(error.__traceback__)
        finally:
            self.operations._remove_proxy()
            self._current = None
            self.buffer.seek(0)
            self.buffer.truncate(0)
        return rendered

    def rebuilt(self, table: str) -> None:
        if self._current is not None:
            self._current.rebuilds.append((table, self._line()))

    def _line(self) -> int | None:
        """The line of the revision file that is running now."""
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename in self._paths:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def _line_in(self, trace: TracebackType | None) -> int | None:
        line = None
        while trace is not None:
            if trace.tb_frame.f_code.co_filename in self._paths:
                line = trace.tb_lineno
            trace = trace.tb_next
        return line
