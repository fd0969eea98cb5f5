"""The core: settings, errors, the version table, the plan and the one migration engine.

It never imports FastAPI, the CLI or pytest: those are adapters on top (``web``, ``cli``,
``testing``).
"""
