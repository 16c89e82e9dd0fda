"""Callbacks (issue 17): the status reminder's durable timer (docs/callbacks.md §5.5)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("callbacks") as batch:
        batch.add_column(sa.Column("reminder_at_ms", sa.BigInteger(), nullable=True))
    op.create_index(op.f("ix_callbacks_reminder_at_ms"), "callbacks", ["reminder_at_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_callbacks_reminder_at_ms"), table_name="callbacks")
    with op.batch_alter_table("callbacks") as batch:
        batch.drop_column("reminder_at_ms")
