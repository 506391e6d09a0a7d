"""Tables of the MQTT side (migrations 0002_messages, 0004_message_retention)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud_hub.models import Base, JsonDoc


class MessageRow(Base):
    """One stored device-to-cloud message; (device_id, message_id) is unique (dedup).

    ``seq`` is never reused (SQLite AUTOINCREMENT, a PostgreSQL sequence), so a ``since`` cursor
    stays valid after the retention pruner deleted the newest rows.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("device_id", "message_id", name="uq_messages_device_id_message_id"),
        Index("ix_messages_device_id_seq", "device_id", "seq"),
        Index("ix_messages_enqueued_at", "enqueued_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    device_id: Mapped[str] = mapped_column(String(128))
    module_id: Mapped[str] = mapped_column(String(128), default="")
    message_id: Mapped[str] = mapped_column(String(128))
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    properties: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
