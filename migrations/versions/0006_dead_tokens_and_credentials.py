"""Mobile providers: dead device tokens, encrypted provider credentials

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_tokens",
        sa.Column("device_type", sa.String(16), nullable=False),
        sa.Column("device_id", sa.String(256), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_type", "device_id", name=op.f("pk_dead_tokens")),
    )
    op.create_table(
        "provider_credentials",
        sa.Column("group_name", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_name", "provider", "kind", name=op.f("pk_provider_credentials")
        ),
    )
    op.create_index(
        op.f("ix_subscriptions_device_id"), "subscriptions", ["device_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_subscriptions_device_id"), table_name="subscriptions")
    op.drop_table("provider_credentials")
    op.drop_table("dead_tokens")
