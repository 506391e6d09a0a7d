"""An index over every twin's tags, for tag queries on large fleets (``cloud_hub/tag_index.py``).

PostgreSQL: a GIN index (``jsonb_path_ops``) on ``twins.tags``, for ``tags @> {...}``.
SQLite: the table ``twin_tag_values`` (one row per primitive leaf of a twin's tags, from
``json_tree``), filled from the existing twins and kept by triggers on ``twins``. A later
migration that recreates ``twins`` on SQLite (batch mode copies the table) drops these triggers
and must create them again (``SQLITE_TRIGGERS``).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The leaves of NEW's tags; a document SQLite cannot parse (e.g. Infinity) adds none rather
# than failing the write (queries on such a document fail in json_extract anyway).
_LEAVES = """
    INSERT OR IGNORE INTO twin_tag_values (device_id, module_id, path, type, value)
    SELECT NEW.device_id, NEW.module_id, j.fullkey, j.type, j.atom
    FROM json_tree(CASE WHEN json_valid(NEW.tags) THEN NEW.tags ELSE '{}' END) AS j
    WHERE j.type NOT IN ('object', 'array');
"""
_FORGET = """
    DELETE FROM twin_tag_values WHERE device_id = OLD.device_id AND module_id = OLD.module_id;
"""
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER twins_tag_values_insert AFTER INSERT ON twins BEGIN {_LEAVES} END",
    "CREATE TRIGGER twins_tag_values_update AFTER UPDATE OF device_id, module_id, tags ON twins "
    f"BEGIN {_FORGET} {_LEAVES} END",
    f"CREATE TRIGGER twins_tag_values_delete AFTER DELETE ON twins BEGIN {_FORGET} END",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_twins_tags_gin ON twins USING gin (tags jsonb_path_ops)")
        return
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        """
        CREATE TABLE twin_tag_values (
            device_id VARCHAR(128) NOT NULL,
            module_id VARCHAR(128) NOT NULL,
            path TEXT NOT NULL,
            type TEXT NOT NULL,
            value,
            PRIMARY KEY (device_id, module_id, path)
        ) WITHOUT ROWID
        """
    )
    op.execute("CREATE INDEX ix_twin_tag_values_path_value ON twin_tag_values (path, value)")
    op.execute(
        """
        INSERT OR IGNORE INTO twin_tag_values (device_id, module_id, path, type, value)
        SELECT t.device_id, t.module_id, j.fullkey, j.type, j.atom
        FROM twins AS t,
             json_tree(CASE WHEN json_valid(t.tags) THEN t.tags ELSE '{}' END) AS j
        WHERE j.type NOT IN ('object', 'array')
        """
    )
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_twins_tags_gin")
        return
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS twins_tag_values_{name}")
    op.execute("DROP TABLE IF EXISTS twin_tag_values")
