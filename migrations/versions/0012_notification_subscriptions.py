"""Callbacks (issue 17): the Notification API's subscriptions and expiring publishes
(docs/callbacks.md §6)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("subscriber_id", sa.String(200), nullable=False),
        sa.Column("filter", sa.String(1000), nullable=False),
        sa.Column("is_pattern", sa.Boolean(), nullable=False),
        sa.Column("prefix", sa.String(1000), nullable=False),
        sa.Column("device_type", sa.String(16), nullable=False),
        sa.Column("device_id", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("debug", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(35), nullable=True),
        sa.Column("authorization", sa.Text(), nullable=True),
        sa.Column("callback_id", sa.String(32), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("expire_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_subscriptions")),
    )
    for column in ("filter", "subscriber_id", "callback_id", "expire_at_ms", "is_pattern"):
        op.create_index(
            op.f(f"ix_notification_subscriptions_{column}"),
            "notification_subscriptions",
            [column],
        )
    op.create_table(
        "notification_publishes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("expire_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_publishes")),
    )
    op.create_index(
        op.f("ix_notification_publishes_expire_at_ms"), "notification_publishes", ["expire_at_ms"]
    )


def downgrade() -> None:
    op.drop_table("notification_publishes")
    op.drop_table("notification_subscriptions")
