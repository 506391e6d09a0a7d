"""Fleet deployments: configurations, per-device deployment history, twins' configurations.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "configurations",
        sa.Column("config_id", sa.String(length=128), nullable=False),
        sa.Column("schema_version", sa.String(length=16), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("content", JSON, nullable=False),
        sa.Column("content_kind", sa.String(length=16), nullable=False),
        sa.Column("layered", sa.Boolean(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("target_condition", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("metric_queries", JSON, nullable=False),
        sa.Column("metric_results", JSON, nullable=False),
        sa.Column("system_metric_results", JSON, nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("rollout", JSON, nullable=True),
        sa.Column("rollout_state", JSON, nullable=True),
        sa.PrimaryKeyConstraint("config_id", name=op.f("pk_configurations")),
    )
    op.create_table(
        "device_deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("configurations", JSON, nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("modules", JSON, nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("succeeded_at", TIME, nullable=True),
        sa.Column("ended_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_device_deployments_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_deployments")),
    )
    op.create_table(
        "deployment_contents",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("content", JSON, nullable=False),
        sa.PrimaryKeyConstraint("content_hash", name=op.f("pk_deployment_contents")),
    )
    op.create_index("ix_device_deployments_device_id_id", "device_deployments", ["device_id", "id"])
    op.add_column("twins", sa.Column("configurations", JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("twins", "configurations")
    op.drop_index("ix_device_deployments_device_id_id", table_name="device_deployments")
    op.drop_table("deployment_contents")
    op.drop_table("device_deployments")
    op.drop_table("configurations")
