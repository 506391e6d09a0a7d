"""Tables of fleet deployments (migration 0005_configurations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloud_hub.models import Base, JsonDoc


class ConfigurationRow(Base):
    """An IoT Hub configuration (edge deployment, or device / module twin configuration).

    ``content`` never changes after creation; ``rollout`` (the staging spec, an edgefleet
    extension) and ``rollout_state`` live beside IoT Hub's fields so that a PUT without them
    (as the SDKs send) keeps them.
    """

    __tablename__ = "configurations"

    config_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    schema_version: Mapped[str] = mapped_column(String(16), default="1.0")
    labels: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    content: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    content_kind: Mapped[str] = mapped_column(String(16))
    layered: Mapped[bool] = mapped_column(Boolean, default=False)
    content_hash: Mapped[str] = mapped_column(String(64))
    target_condition: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    metric_queries: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    metric_results: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    system_metric_results: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    etag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    rollout_state: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)


class DeviceDeploymentRow(Base):
    """One span of what a device was given: the configurations assigned and their merged content
    (by hash: devices given the same content share one ``deployment_contents`` row).

    ``succeeded_at`` is set when the device reported success for that content, which makes the
    row a rollback target.
    """

    __tablename__ = "device_deployments"
    __table_args__ = (Index("ix_device_deployments_device_id_id", "device_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("devices.device_id", ondelete="CASCADE")
    )
    configurations: Mapped[list[Any]] = mapped_column(JsonDoc)
    content_hash: Mapped[str] = mapped_column(String(64))
    modules: Mapped[list[Any]] = mapped_column(JsonDoc)
    desired_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeploymentContentRow(Base):
    """A merged module-twin content that some device was given, stored once per hash."""

    __tablename__ = "deployment_contents"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
