"""``python -m fastapi_migrate``: the same as the ``fastapi-migrate`` command."""

from .cli import main

raise SystemExit(main())
