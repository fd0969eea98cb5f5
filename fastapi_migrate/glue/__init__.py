"""The thin layer over Alembic: its Config, its scripts, running ``env.py``, comparing schemas."""
