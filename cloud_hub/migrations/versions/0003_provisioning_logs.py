"""Enrollment groups, registrations, log upload tokens and uploaded logs (were JSON files).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _stamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "enrollment_groups",
        sa.Column("group_id", sa.String(length=128), nullable=False),
        sa.Column("primary_key", sa.String(length=128), nullable=False),
        sa.Column("secondary_key", sa.String(length=128), nullable=False),
        sa.Column("iot_edge", sa.Boolean(), nullable=False),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_enrollment_groups")),
    )
    op.create_table(
        "registrations",
        sa.Column("registration_id", sa.String(length=128), nullable=False),
        sa.Column("group_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["enrollment_groups.group_id"],
            name=op.f("fk_registrations_group_id_enrollment_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("registration_id", name=op.f("pk_registrations")),
    )
    op.create_index(op.f("ix_registrations_group_id"), "registrations", ["group_id"])
    op.create_table(
        "log_upload_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_log_upload_tokens_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_log_upload_tokens")),
    )
    op.create_index(op.f("ix_log_upload_tokens_device_id"), "log_upload_tokens", ["device_id"])
    op.create_index(op.f("ix_log_upload_tokens_expires_at"), "log_upload_tokens", ["expires_at"])
    op.create_table(
        "log_uploads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=192), nullable=False),
        sa.Column("module", sa.String(length=128), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_log_uploads_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_uploads")),
        sa.UniqueConstraint("device_id", "name", name="uq_log_uploads_device_id_name"),
    )


def downgrade() -> None:
    op.drop_table("log_uploads")
    op.drop_index(op.f("ix_log_upload_tokens_expires_at"), table_name="log_upload_tokens")
    op.drop_index(op.f("ix_log_upload_tokens_device_id"), table_name="log_upload_tokens")
    op.drop_table("log_upload_tokens")
    op.drop_index(op.f("ix_registrations_group_id"), table_name="registrations")
    op.drop_table("registrations")
    op.drop_table("enrollment_groups")
