"""Message retention: an index on enqueued_at; SQLite's seq becomes AUTOINCREMENT.

Without AUTOINCREMENT SQLite hands out max(seq) + 1, so once the pruner emptied the table (or
deleted its newest rows) sequence numbers would be reused and a client's ``since`` cursor would
skip new messages. SQLite cannot change that in place: the table is copied (batch mode).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "messages", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    op.create_index("ix_messages_enqueued_at", "messages", ["enqueued_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_enqueued_at", table_name="messages")
