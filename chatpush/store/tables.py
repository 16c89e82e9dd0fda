"""The schema, as SQLAlchemy declarative models. Alembic revisions must produce exactly this."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class Chat(Base):
    __tablename__ = "chats"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_name: Mapped[str] = mapped_column(String(200))
    secure_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(Text)
    email_address: Mapped[str | None] = mapped_column(String(320))
    user_data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    ended_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_client_request_ms: Mapped[int] = mapped_column(BigInteger)
    last_index: Mapped[int] = mapped_column(Integer)
    """The highest transcript index written so far (0 before the first event)."""
    client_position: Mapped[int] = mapped_column(Integer)
    """The highest index the customer has retrieved: the base of an empty reply's nextPosition."""
    last_participant_id: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index(None, "service_name", "created_at_ms"),
        Index(None, "ended_at_ms"),
    )


class Party(Base):
    __tablename__ = "parties"

    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id"), primary_key=True)
    participant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    nickname: Mapped[str] = mapped_column(String(256))
    first_name: Mapped[str | None] = mapped_column(String(256))
    last_name: Mapped[str | None] = mapped_column(String(256))
    joined_at_ms: Mapped[int] = mapped_column(BigInteger)
    left_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class Event(Base):
    __tablename__ = "events"

    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id"), primary_key=True)
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    participant_id: Mapped[int] = mapped_column(Integer)
    nickname: Mapped[str] = mapped_column(String(256))
    party_type: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    message_type: Mapped[str | None] = mapped_column(String(128))
    user_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    utc_time_ms: Mapped[int] = mapped_column(BigInteger)


metadata = Base.metadata
