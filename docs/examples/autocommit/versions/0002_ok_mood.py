"""a third mood, and an index built without blocking writes"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE mood ADD VALUE IF NOT EXISTS 'ok'")
        op.execute("CREATE INDEX CONCURRENTLY ix_items_name ON items (name)")
    op.execute("UPDATE items SET mood = 'ok' WHERE name LIKE 'fine%'")  # a transaction again


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY ix_items_name")
