"""``python -m fastapi_migrate``: the same as the ``fastapi-migrate`` command."""

from .cli import console

raise SystemExit(console())
