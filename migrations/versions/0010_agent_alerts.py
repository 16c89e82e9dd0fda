"""Agent alerts (issue 18): registered devices, rings, the dedup window, the per-conversation
trail and the event stream's lease

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agent_devices",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("device_type", sa.String(16), nullable=False),
        sa.Column("token", sa.String(256), nullable=False),
        sa.Column("topic", sa.String(200), nullable=True),
        sa.Column("group_name", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_devices"),
        sa.UniqueConstraint("device_type", "token", name="uq_agent_devices_device_type_token"),
    )
    op.create_index("ix_agent_devices_user_id", "agent_devices", ["user_id"])
    op.create_table(
        "agent_rings",
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("device_type", sa.String(16), nullable=False),
        sa.Column("token", sa.String(256), nullable=False),
        sa.Column("group_name", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("rung_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("cancelled_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("conversation_id", "user_id", "device_id", name="pk_agent_rings"),
    )
    op.create_index("ix_agent_rings_rung_at_ms", "agent_rings", ["rung_at_ms"])
    op.create_table(
        "agent_dedup",
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("rung_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "user_id", name="pk_agent_dedup"),
    )
    op.create_index("ix_agent_dedup_rung_at_ms", "agent_dedup", ["rung_at_ms"])
    op.create_table(
        "agent_trail",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=True),
        sa.Column("device_type", sa.String(16), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_trail"),
    )
    op.create_index("ix_agent_trail_conversation_id_id", "agent_trail", ["conversation_id", "id"])
    op.create_index("ix_agent_trail_at_ms", "agent_trail", ["at_ms"])
    op.create_table(
        "agent_stream_lease",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("until_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_agent_stream_lease"),
    )


def downgrade() -> None:
    op.drop_table("agent_stream_lease")
    op.drop_index("ix_agent_trail_at_ms", "agent_trail")
    op.drop_index("ix_agent_trail_conversation_id_id", "agent_trail")
    op.drop_table("agent_trail")
    op.drop_index("ix_agent_dedup_rung_at_ms", "agent_dedup")
    op.drop_table("agent_dedup")
    op.drop_index("ix_agent_rings_rung_at_ms", "agent_rings")
    op.drop_table("agent_rings")
    op.drop_index("ix_agent_devices_user_id", "agent_devices")
    op.drop_table("agent_devices")
