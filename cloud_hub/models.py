"""SQLAlchemy tables of the hub (devices, modules, twins, API tokens, provisioning, logs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON on SQLite (queried with json_extract), JSONB on PostgreSQL.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")

# Device twins use this module id so that device and module twins share one table.
DEVICE_TWIN = ""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DeviceRow(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation_id: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="enabled")
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_updated_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    auth_type: Mapped[str] = mapped_column(String(32), default="sas")
    primary_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    secondary_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    primary_thumbprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    secondary_thumbprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    iot_edge: Mapped[bool] = mapped_column(Boolean, default=False)
    connection_state: Mapped[str] = mapped_column(String(16), default="Disconnected")
    connection_state_updated_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_activity_time: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    cloud_to_device_message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModuleRow(Base):
    __tablename__ = "modules"

    device_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("devices.device_id", ondelete="CASCADE"), primary_key=True
    )
    module_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation_id: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str] = mapped_column(String(64))
    managed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    auth_type: Mapped[str] = mapped_column(String(32), default="sas")
    primary_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    secondary_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    primary_thumbprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    secondary_thumbprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    connection_state: Mapped[str] = mapped_column(String(16), default="Disconnected")
    connection_state_updated_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_activity_time: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    cloud_to_device_message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TwinRow(Base):
    """A device twin (module_id == "") or a module twin."""

    __tablename__ = "twins"
    __table_args__ = (
        ForeignKeyConstraint(["device_id"], ["devices.device_id"], ondelete="CASCADE"),
        # Tag lookups (cloud_hub/tag_index.py); SQLite's counterpart is the twin_tag_values
        # table that migration 0007 keeps with triggers, outside this metadata.
        Index(
            "ix_twins_tags_gin",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
            info={"dialect": "postgresql"},
        ),
    )

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    module_id: Mapped[str] = mapped_column(String(128), primary_key=True, default=DEVICE_TWIN)
    version: Mapped[int] = mapped_column(Integer, default=1)
    tags: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    desired: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    desired_meta: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    desired_version: Mapped[int] = mapped_column(Integer, default=1)
    reported: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    reported_meta: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    reported_version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: ``{configuration id: {"status": "Targeted" | "Applied"}}`` on device and $edgeAgent twins
    configurations: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)


class TokenRow(Base):
    """A REST API bearer token; only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    scopes: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AccessPolicyRow(Base):
    """A shared access policy (IoT Hub's): a name, two signing keys and the scopes it grants.

    The keys are kept as they are (not hashed): verifying a SAS token recomputes its HMAC.
    """

    __tablename__ = "access_policies"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    primary_key: Mapped[str] = mapped_column(String(128))
    secondary_key: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EnrollmentGroupRow(Base):
    """A DPS-style enrollment group; its keys are stored as the registry stores device keys."""

    __tablename__ = "enrollment_groups"

    group_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    primary_key: Mapped[str] = mapped_column(String(128))
    secondary_key: Mapped[str] = mapped_column(String(128))
    iot_edge: Mapped[bool] = mapped_column(Boolean, default=False)
    provisioning_status: Mapped[str] = mapped_column(String(16), default="enabled")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RegistrationRow(Base):
    """The last successful self-registration of one registration id (= device id)."""

    __tablename__ = "registrations"

    registration_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    group_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("enrollment_groups.group_id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LogUploadTokenRow(Base):
    """A log upload capability (the secret is in the URL); only its SHA-256 is stored."""

    __tablename__ = "log_upload_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("devices.device_id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LogUploadRow(Base):
    """One uploaded module log (JSON, possibly gzip); the bytes live in ``content``."""

    __tablename__ = "log_uploads"
    __table_args__ = (UniqueConstraint("device_id", "name", name="uq_log_uploads_device_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("devices.device_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(192))
    module: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# Feature tables defined in their own modules register on Base.metadata here (one import each).
from cloud_hub.deployments import tables as _deployment_tables  # noqa: E402,F401
from cloud_hub.mqtt import tables as _mqtt_tables  # noqa: E402,F401
