"""64-bit row ids for outbox and deliveries on PostgreSQL (SQLite's are 64-bit already)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("outbox", "deliveries")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(table, "id", type_=sa.BigInteger(), existing_type=sa.Integer())
        op.execute(f"ALTER SEQUENCE {table}_id_seq AS bigint")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER SEQUENCE {table}_id_seq AS integer")
        op.alter_column(table, "id", type_=sa.Integer(), existing_type=sa.BigInteger())
