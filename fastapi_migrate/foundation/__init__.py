"""The foundation: what every other layer uses and that imports none of them.

Settings, errors, the result of a start, URL redaction, retries, migration trees, progress lines,
the lent test database, the app's metadata. Above it, the Alembic glue (``glue``) and the
database backends (``backends``); above those, the engine (``engine``); on top, the adapters
(``web``, ``cli``, ``testing``, the pytest plugin). Imports between the folders run that way only
(``tests/test_layers.py``).
"""
