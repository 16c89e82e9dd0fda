"""Send outcomes in the trail (what kind of failure, the service's Retry-After); the trigger
flag called pending, out_pending and held gets one name: subscriptions.out_held

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep NULL: recorded before failures were told apart.
    op.add_column("deliveries", sa.Column("failure", sa.String(16), nullable=True))
    op.add_column("deliveries", sa.Column("retry_after_ms", sa.BigInteger(), nullable=True))
    # A rename keeps the values (SQLite >= 3.25 and PostgreSQL alike).
    op.execute("ALTER TABLE subscriptions RENAME COLUMN out_pending TO out_held")


def downgrade() -> None:
    op.execute("ALTER TABLE subscriptions RENAME COLUMN out_held TO out_pending")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("retry_after_ms")
        batch.drop_column("failure")
