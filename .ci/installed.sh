# Sourced by .ci/run and the GitHub workflows: test what users install, not the checkout.
# The suite runs from a copy of tests/ and example_app/ (with pyproject.toml for pytest's
# settings), by a venv's python, with PYTHONPATH unset: the checkout is never on the path.

# pip's stderr without the notes about this machine's unused local index folders.
quiet_pip() { grep -v "^WARNING: Location '" || true; }

# build_dist OUTDIR: the sdist, and the wheel built from it; their metadata checked.
build_dist() {
  local out="$1" tools
  tools="$(mktemp -d)"
  python -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet "build>=1.2" "twine>=6" 2> >(quiet_pip >&2)
  "$tools/bin/python" -m build --outdir "$out" . >"$tools/build.log" 2>&1 \
    || { cat "$tools/build.log"; return 1; }
  "$tools/bin/python" -m twine check --strict "$out"/*.tar.gz "$out"/*.whl
  rm -rf "$tools"
}

# install_wheel PYTHON VENV WHEEL [CONSTRAINTS]: a new venv with the wheel and its dev extra.
install_wheel() {
  local python="$1" venv="$2" wheel="$3" constraints="${4:-}"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install --quiet ${constraints:+-c "$constraints"} "$wheel[dev]" \
    2> >(quiet_pip >&2)
}

# copy_suite DIR: the tests and what they need (docs/: the examples they run), away from the
# checkout's fastapi_migrate/.
copy_suite() {
  mkdir -p "$1"
  cp -R tests example_app docs pyproject.toml README.md "$1/"
  find "$1" -name __pycache__ -prune -exec rm -rf {} +
}

# in_venv VENV DIR COMMAND...: COMMAND in DIR, VENV's python and scripts first on PATH.
# FM_TEST_INSTALLED=1 makes tests/test_package.py check that site-packages is what runs.
in_venv() {
  local venv="$1" dir="$2"
  shift 2
  (cd "$dir" && env -u PYTHONPATH PATH="$venv/bin:$PATH" FM_TEST_INSTALLED=1 "$@")
}

# where_from VENV DIR: which fastapi_migrate that venv imports there; fails unless site-packages.
where_from() {
  in_venv "$1" "$2" python -c '
import importlib.metadata as m, sys, fastapi_migrate
print("fastapi_migrate", m.version("fastapi-migrate-on-startup"), "from", fastapi_migrate.__file__,
      "on Python", sys.version.split()[0])
sys.exit("/site-packages/fastapi_migrate/" not in fastapi_migrate.__file__)'
}

# floors_pytest VENV DIR PYTEST-ARGS...: pytest in a venv of the lowest declared versions.
# What the oldest versions warn about is not this project's code, so it is no error there
# (pyproject.toml's "error" stays for everything else). PYTEST_ADDOPTS reaches the suite's own
# child pytest runs too. The old Starlette of the fastapi floor uses anyio's and httpx's
# deprecated names, and its TestClient leaves anyio memory streams to the garbage collector; with the floors of Alembic and SQLAlchemy the version table's primary key
# is named, which MariaDB ignores with a note that aiomysql reports as a warning.
floors_pytest() {
  local venv="$1" dir="$2"
  shift 2
  PYTEST_ADDOPTS="-p no:cacheprovider \
 -W 'ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning' \
 -W \"ignore:The 'app' shortcut is now deprecated:DeprecationWarning\" \
 -W \"ignore:Name 'alembic_version_pkc' ignored for PRIMARY key\" \
 -W 'ignore:Unclosed <MemoryObject:ResourceWarning'" \
    in_venv "$venv" "$dir" python -m pytest "$@"
}

# floors_freeze VENV: the versions the floors venv holds, for the log.
floors_freeze() {
  "$1/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE \
    "^(fastapi|starlette|alembic|sqlalchemy|pydantic|pydantic.settings|psycopg|psycopg.binary|pymysql|greenlet|asyncpg|aiosqlite|aiomysql|httpx|httpx2)=="
}
