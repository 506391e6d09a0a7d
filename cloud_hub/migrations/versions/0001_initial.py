"""Initial schema: devices, modules, twins, API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 00:05:50.819661
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    """JSON on SQLite, JSONB on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_token_hash"), ["token_hash"], unique=True)

    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("generation_id", sa.String(length=64), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("status_updated_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("auth_type", sa.String(length=32), nullable=False),
        sa.Column("primary_key", sa.String(length=128), nullable=True),
        sa.Column("secondary_key", sa.String(length=128), nullable=True),
        sa.Column("primary_thumbprint", sa.String(length=128), nullable=True),
        sa.Column("secondary_thumbprint", sa.String(length=128), nullable=True),
        sa.Column("iot_edge", sa.Boolean(), nullable=False),
        sa.Column("connection_state", sa.String(length=16), nullable=False),
        sa.Column("connection_state_updated_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_activity_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cloud_to_device_message_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_table(
        "modules",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("module_id", sa.String(length=128), nullable=False),
        sa.Column("generation_id", sa.String(length=64), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("managed_by", sa.String(length=128), nullable=True),
        sa.Column("auth_type", sa.String(length=32), nullable=False),
        sa.Column("primary_key", sa.String(length=128), nullable=True),
        sa.Column("secondary_key", sa.String(length=128), nullable=True),
        sa.Column("primary_thumbprint", sa.String(length=128), nullable=True),
        sa.Column("secondary_thumbprint", sa.String(length=128), nullable=True),
        sa.Column("connection_state", sa.String(length=16), nullable=False),
        sa.Column("connection_state_updated_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_activity_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cloud_to_device_message_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_modules_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "module_id", name=op.f("pk_modules")),
    )
    op.create_table(
        "twins",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("module_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("desired", _json(), nullable=False),
        sa.Column("desired_meta", _json(), nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=False),
        sa.Column("reported", _json(), nullable=False),
        sa.Column("reported_meta", _json(), nullable=False),
        sa.Column("reported_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_twins_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "module_id", name=op.f("pk_twins")),
    )


def downgrade() -> None:
    op.drop_table("twins")
    op.drop_table("modules")
    op.drop_table("devices")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_token_hash"))

    op.drop_table("api_tokens")
