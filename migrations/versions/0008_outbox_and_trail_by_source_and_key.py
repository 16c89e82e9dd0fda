"""The outbox and the trail keyed by the notification's source and key, not by chat (issue 14)

``outbox.chat_id`` becomes ``source`` + ``key`` (no foreign key to chats: a callback or an agent
alert has no chat); a chat's rows keep working as source ``chat``, key = the chat id. The outbox
gains what a source other than the chat pipeline hands over: its destination (NULL for a chat's
rows, which route by the chat's subscription), the rendering fields (one JSON column), and the
plain-retry bookkeeping (tries, max_attempts, retry_delays). ``deliveries.chat_id`` becomes
``source`` + ``key``, and the trail notes each attempt's message id.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # chat_id is renamed (its values and its place kept): a chat's rows are keyed by the chat id.
    op.drop_index("ix_outbox_chat_id_id", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("fk_outbox_chat_id_chats", type_="foreignkey")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column(
            "chat_id",
            new_column_name="key",
            existing_type=sa.String(32),
            type_=sa.String(200),
            existing_nullable=False,
        )
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("device_type", sa.String(16), nullable=True))
        batch.add_column(sa.Column("device_id", sa.Text(), nullable=True))
        batch.add_column(sa.Column("group_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("provider", sa.String(200), nullable=True))
        batch.add_column(sa.Column("debug", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("authorization_header", sa.Text(), nullable=True))
        batch.add_column(sa.Column("rendering", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("tries", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("max_attempts", sa.Integer(), server_default="1", nullable=False)
        )
        batch.add_column(sa.Column("retry_delays", sa.JSON(), nullable=True))
    op.execute("UPDATE outbox SET source = 'chat'")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("source", existing_type=sa.String(16), nullable=False)
    op.create_index("ix_outbox_source_key_id", "outbox", ["source", "key", "id"])

    op.drop_index("ix_deliveries_chat_id_id", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column(
            "chat_id",
            new_column_name="key",
            existing_type=sa.String(32),
            type_=sa.String(200),
            existing_nullable=False,
        )
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("message_id", sa.String(64), nullable=True))
    op.execute("UPDATE deliveries SET source = 'chat'")
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("source", existing_type=sa.String(16), nullable=False)
    op.create_index("ix_deliveries_source_key_id", "deliveries", ["source", "key", "id"])


def downgrade() -> None:
    # Only a chat's rows can go back to tables keyed by chat; the others are dropped.
    op.execute("DELETE FROM outbox WHERE source <> 'chat' OR key NOT IN (SELECT id FROM chats)")
    op.execute("DELETE FROM deliveries WHERE source <> 'chat'")
    op.drop_index("ix_deliveries_source_key_id", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("message_id")
        batch.drop_column("source")
        batch.alter_column(
            "key",
            new_column_name="chat_id",
            existing_type=sa.String(200),
            type_=sa.String(32),
            existing_nullable=False,
        )
    op.create_index("ix_deliveries_chat_id_id", "deliveries", ["chat_id", "id"])

    op.drop_index("ix_outbox_source_key_id", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        for column in (
            "retry_delays",
            "max_attempts",
            "tries",
            "rendering",
            "authorization_header",
            "debug",
            "provider",
            "group_name",
            "device_id",
            "device_type",
            "source",
        ):
            batch.drop_column(column)
        batch.alter_column(
            "key",
            new_column_name="chat_id",
            existing_type=sa.String(200),
            type_=sa.String(32),
            existing_nullable=False,
        )
    with op.batch_alter_table("outbox") as batch:
        batch.create_foreign_key("fk_outbox_chat_id_chats", "chats", ["chat_id"], ["id"])
    op.create_index("ix_outbox_chat_id_id", "outbox", ["chat_id", "id"])
