"""Checks a project runs in its own test suite, on real databases; and the pytest plugin's parts.

```python
from fastapi_migrate.testing import (
    assert_downgrade_leaves_no_trace, assert_models_match_migrations, assert_single_head,
    assert_upgrade_downgrade_roundtrip,
)

def test_migrations():
    assert_single_head()
    assert_upgrade_downgrade_roundtrip()
    assert_downgrade_leaves_no_trace()
    assert_models_match_migrations()
```

The helpers are imported on first use: the pytest plugin, loaded by every pytest run of a
project that installs fastapi-migrate, imports this package and must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .assertions import (
        assert_downgrade_leaves_no_trace,
        assert_models_match_migrations,
        assert_single_head,
        assert_upgrade_downgrade_roundtrip,
    )

__all__ = [
    "assert_downgrade_leaves_no_trace",
    "assert_models_match_migrations",
    "assert_single_head",
    "assert_upgrade_downgrade_roundtrip",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import assertions

        return getattr(assertions, name)
    raise AttributeError(f"module 'fastapi_migrate.testing' has no attribute {name!r}")
