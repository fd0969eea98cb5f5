"""Property-based tests (hypothesis): settings parsing, and no password ever shown.

Passwords are generated with every kind of character (``@ : / % ? # &``, spaces, quotes,
non-ASCII), escaped in the URL as SQLAlchemy renders it and raw as a hurried user types it. A
marker in the middle keeps each one distinctive, so finding it in an output means it leaked.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from fastapi_migrate import ConfigurationError, MigrateSettings, MigrationError, migrate
from fastapi_migrate.cli import main as cli_main
from fastapi_migrate.foundation.redaction import mask_url, redact

from .support import refused_port, write_migrations

MARKER = "Zq7"
CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
PASSWORDS = st.builds(
    lambda left, right: left + MARKER + right,
    st.text(CHARACTERS, max_size=12),
    st.text(CHARACTERS, max_size=12),
)
# Printable ASCII, the characters a URL password is usually typed with; a raw URL string
# with a newline in it is not something anyone passes.
TYPED = st.builds(
    lambda left, right: left + MARKER + right,
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
)
DRIVERS = st.sampled_from(
    ["postgresql+psycopg", "postgresql+asyncpg", "mysql+pymysql", "mysql+aiomysql"]
)
FAST = settings(max_examples=200, deadline=None)
SLOW = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def escaped_url(driver: str, password: str, port: int = 5432) -> str:
    """The URL as SQLAlchemy writes it: the password %-escaped."""
    url = sa.URL.create(driver, "app", password, "127.0.0.1", port, "x")
    return url.render_as_string(hide_password=False)


def raw_url(driver: str, password: str, port: int = 5432) -> str:
    """The URL as typed, password not escaped (a common mistake)."""
    return f"{driver}://app:{password}@127.0.0.1:{port}/x"


def forms(password: str) -> list[str]:
    """The password and every way it is written in a URL."""
    from urllib.parse import quote, quote_plus

    return [password, quote(password, safe=""), quote_plus(password)]


def assert_hidden(password: str, *texts: str) -> None:
    for text in texts:
        for form in forms(password):
            assert form not in text, f"{form!r} in {text!r}"


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for the block (hypothesis runs many examples per test)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def every_log_record() -> Iterator[list[str]]:
    """Everything any logger emits in the block, formatted with its exception."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def error_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), "".join(traceback.format_exception(error))]


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with one revision and no alembic.ini or .env."""
    root = tmp_path_factory.mktemp("properties")
    write_migrations(root, 1)
    return root / "migrations"


# -- masking ---------------------------------------------------------------------------------------


@FAST
@given(password=PASSWORDS, driver=DRIVERS)
def test_an_escaped_password_is_never_shown(password: str, driver: str) -> None:
    url = escaped_url(driver, password)
    assume(password in sa.make_url(url).password)  # what SQLAlchemy reads back
    settings = MigrateSettings(database_url=url, migrate_database_url=url)
    assert_hidden(
        password,
        mask_url(url),
        mask_url(sa.make_url(url)),
        redact(f"could not connect to {url}: refused", [url]),
        repr(settings),
        str(settings),
    )
    assert mask_url(url).startswith(f"{driver}://app:***@")


@FAST
@given(password=TYPED, driver=DRIVERS)
def test_a_raw_password_is_never_shown(password: str, driver: str) -> None:
    url = raw_url(driver, password)
    texts = [mask_url(url), redact(f"could not connect to {url}: refused", [url])]
    try:
        texts.append(repr(MigrateSettings(database_url=url)))
    except ConfigurationError as error:
        texts += error_texts(error)
    assert_hidden(password, *texts)


@FAST
@given(password=PASSWORDS, timeout=st.text(max_size=8))
def test_a_bad_setting_beside_a_url_does_not_show_the_url(password: str, timeout: str) -> None:
    assume(not re.fullmatch(r"\s*[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", timeout))
    url = escaped_url("postgresql+psycopg", password)
    with pytest.raises(ConfigurationError) as caught:
        MigrateSettings(database_url=url, lock_timeout=timeout)
    assert "MIGRATE_LOCK_TIMEOUT" in str(caught.value)
    assert_hidden(password, *error_texts(caught.value))


@SLOW
@given(password=PASSWORDS, driver=DRIVERS, raw=st.booleans())
# Found by hypothesis: a raw '@' then a Unicode space (NEL) once cut the masked password short.
@example(password="@Zq7\x85", driver="postgresql+psycopg", raw=True)
def test_a_failed_start_shows_the_password_nowhere(
    scripts: Path, password: str, driver: str, raw: bool
) -> None:
    """A real connection attempt to a closed port: the error, its traceback and every log
    record of every logger (SQLAlchemy's and Alembic's too)."""
    make = raw_url if raw else escaped_url
    url = make(driver, password, refused_port())
    with every_log_record() as records:
        try:
            migrate(
                MigrateSettings(database_url=url, script_location=str(scripts), connect_timeout=0)
            )
        except MigrationError as error:
            texts = error_texts(error)
        else:
            raise AssertionError("connected to a closed port?")
    assert_hidden(password, *texts, *records)


@SLOW
@given(password=PASSWORDS, raw=st.booleans())
def test_the_command_line_shows_the_password_nowhere(
    scripts: Path, password: str, raw: bool
) -> None:
    """``fastapi-migrate --verbose upgrade``: stdout, stderr (with the traceback) and logs."""
    make = raw_url if raw else escaped_url
    url = make("postgresql+psycopg", password, refused_port())
    out, err = io.StringIO(), io.StringIO()
    env = {
        "DATABASE_URL": url,
        "MIGRATE_SCRIPT_LOCATION": str(scripts),
        "MIGRATE_CONNECT_TIMEOUT": "0",
    }
    with (
        environ(**env),
        every_log_record() as records,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = cli_main(["--verbose", "upgrade"])
    assert code in (1, 2), err.getvalue()
    assert_hidden(password, out.getvalue(), err.getvalue(), *records)


# -- settings parsing ------------------------------------------------------------------------------


@FAST
@given(value=st.floats(min_value=0, max_value=31_536_000, allow_nan=False))
def test_a_non_negative_number_is_read_as_that_many_seconds(value: float) -> None:
    with environ(MIGRATE_LOCK_TIMEOUT=repr(value), MIGRATE_CONNECT_TIMEOUT=str(value)):
        read = MigrateSettings(database_url="sqlite://")
    assert math.isclose(read.lock_timeout, value) and math.isclose(read.connect_timeout, value)


@FAST
@given(value=st.floats(min_value=31_536_000.001, allow_nan=False, allow_infinity=False))
def test_a_timeout_above_a_year_is_refused_by_name(value: float) -> None:
    """PyMySQL refuses a longer connect timeout, and longer waits overflow time_t."""
    for variable in ("MIGRATE_LOCK_TIMEOUT", "MIGRATE_CONNECT_TIMEOUT"):
        with (
            environ(**{variable: repr(value)}),
            pytest.raises(ConfigurationError, match=f"{variable}: Input should be less"),
        ):
            MigrateSettings(database_url="sqlite://")


@FAST
@given(value=st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
def test_a_negative_timeout_is_refused_by_name(value: float) -> None:
    with (
        environ(MIGRATE_LOCK_TIMEOUT=repr(value)),
        pytest.raises(ConfigurationError, match="MIGRATE_LOCK_TIMEOUT"),
    ):
        MigrateSettings(database_url="sqlite://")


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@FAST
@given(name=st.text(max_size=70) | st.from_regex(IDENTIFIER, fullmatch=True))
def test_the_version_table_must_be_a_plain_identifier(name: str) -> None:
    """Exactly the names that need no quoting are accepted; anything else is a clear error."""
    try:
        read = MigrateSettings(database_url="sqlite://", version_table=name)
    except ConfigurationError as error:
        assert not IDENTIFIER.fullmatch(name)
        assert str(error).startswith("invalid settings: MIGRATE_VERSION_TABLE:")
    else:
        assert IDENTIFIER.fullmatch(name) and read.version_table == name


@FAST
@given(mode=st.text(max_size=12))
def test_only_the_four_modes_are_accepted(mode: str) -> None:
    try:
        read = MigrateSettings(database_url="sqlite://", mode=mode)
    except ConfigurationError as error:
        assert mode not in ("upgrade", "wait", "check", "off")
        assert "MIGRATE_MODE" in str(error)
    else:
        assert read.mode == mode
