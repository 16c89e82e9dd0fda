"""Callbacks (issue 17): the callback record, its properties, its commands to the CC side, guards

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("service_name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("desired_time_ms", sa.BigInteger(), nullable=False),
        sa.Column("expiration_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("completed_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("command_seq", sa.Integer(), nullable=False),
        sa.Column("ewt_s", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("total_waiting", sa.Integer(), nullable=True),
        sa.Column("ewt_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("upcoming", sa.String(16), nullable=False),
        sa.Column("access_number", sa.String(64), nullable=True),
        sa.Column("access_code", sa.String(64), nullable=True),
        sa.Column("base_url", sa.String(512), nullable=False),
        sa.Column("device_type", sa.String(16), nullable=True),
        sa.Column("device_id", sa.String(512), nullable=True),
        sa.Column("device_provider", sa.String(200), nullable=True),
        sa.Column("device_debug", sa.Boolean(), nullable=False),
        sa.Column("device_language", sa.String(35), nullable=True),
        sa.Column("due_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("ttl_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("purge_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
    )
    op.create_index(
        op.f("ix_callbacks_service_name_desired_time_ms"),
        "callbacks",
        ["service_name", "desired_time_ms"],
    )
    for column in ("due_at_ms", "ttl_at_ms", "purge_at_ms"):
        op.create_index(op.f(f"ix_callbacks_{column}"), "callbacks", [column])
    op.create_table(
        "callback_properties",
        sa.Column("callback_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["callback_id"],
            ["callbacks.id"],
            name=op.f("fk_callback_properties_callback_id_callbacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("callback_id", "name", name=op.f("pk_callback_properties")),
    )
    op.create_index(op.f("ix_callback_properties_name"), "callback_properties", ["name"])
    op.create_table(
        "callback_commands",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("command_id", sa.String(32), nullable=False),
        sa.Column("callback_id", sa.String(32), nullable=False),
        sa.Column("service_name", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["callback_id"],
            ["callbacks.id"],
            name=op.f("fk_callback_commands_callback_id_callbacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_commands")),
        sa.UniqueConstraint("command_id", name=op.f("uq_callback_commands_command_id")),
    )
    op.create_index(
        op.f("ix_callback_commands_callback_id_id"), "callback_commands", ["callback_id", "id"]
    )
    op.create_index(
        op.f("ix_callback_commands_service_name_id"), "callback_commands", ["service_name", "id"]
    )

    op.create_table(
        "callback_guards",
        sa.Column("callback_id", sa.String(32), nullable=False),
        sa.Column("guard", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["callback_id"],
            ["callbacks.id"],
            name=op.f("fk_callback_guards_callback_id_callbacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("callback_id", "guard", name=op.f("pk_callback_guards")),
    )


def downgrade() -> None:
    op.drop_table("callback_guards")
    op.drop_table("callback_commands")
    op.drop_table("callback_properties")
    op.drop_table("callbacks")
