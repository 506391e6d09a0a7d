"""Shared access policies: iothubowner, service, registryRead and registryReadWrite with fresh keys.

Revision ID: 0006
Revises: 0005
"""

import base64
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from edgefleet.utctime import utc_now

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
# The policies an IoT hub is created with, as scopes (cloud_hub.tokens).
DEFAULTS = {
    "iothubowner": "admin",
    "service": "deploy service",
    "registryRead": "registry:read",
    "registryReadWrite": "registry:read registry:write",
}


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def upgrade() -> None:
    table = op.create_table(
        "access_policies",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("primary_key", sa.String(length=128), nullable=False),
        sa.Column("secondary_key", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.String(length=256), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_access_policies")),
    )
    now = utc_now()
    op.bulk_insert(
        table,
        [
            {
                "name": name,
                "primary_key": _key(),
                "secondary_key": _key(),
                "scopes": scopes,
                "created_at": now,
                "updated_at": now,
            }
            for name, scopes in DEFAULTS.items()
        ],
    )


def downgrade() -> None:
    op.drop_table("access_policies")
