"""The engine: one start from the settings to the database at its target.

Its state (the version table), the plan, the migration lock, the run with its DDL retries,
progress monitor and seed, and the analysis of a failure. It uses the foundation, the Alembic
glue and the backends; the adapters (``web``, ``cli``, ``testing``) use it, never the reverse.
"""
