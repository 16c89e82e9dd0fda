"""Callbacks (issue 17): an index on ``callbacks.state`` (a create counts the open callbacks), and
``outbox.expires_at_ms``: a notification tried until then (the contact-centre side's webhook
commands, docs/callbacks.md §4.2) rather than a number of times

Revision ID: 0013
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_callbacks_state"), "callbacks", ["state"])
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("expires_at_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("expires_at_ms")
    op.drop_index(op.f("ix_callbacks_state"), table_name="callbacks")
