"""items, with a mood"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("mood", sa.Enum("good", "bad", name="mood")),
    )
    op.execute("INSERT INTO items (name, mood) VALUES ('fine wine', 'good'), ('rain', 'bad')")


def downgrade() -> None:
    op.drop_table("items")
    sa.Enum(name="mood").drop(op.get_bind())
