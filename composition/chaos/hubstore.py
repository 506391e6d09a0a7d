"""Reads the hub's stored telemetry straight from its SQLite database (read-only), not through
the hub's code or API, so the checker does not trust the component under test. Incremental: each
``poll`` reads only rows stored since the last one, in storage order."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def parse_body(body: bytes) -> tuple[str, int] | None:
    """``(device, seq)`` of a load-generator message, None for anything else."""
    try:
        doc = json.loads(body)
        return str(doc["device"]), int(doc["seq"])
    except (ValueError, KeyError, TypeError):
        return None


class StoredMessages:
    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.rows: list[tuple[str, int]] = []
        self._after = 0

    def poll(self) -> list[tuple[str, int]]:
        """Rows stored since the previous poll (also kept in ``rows``)."""
        if not self.db_file.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db_file}?mode=ro", uri=True, timeout=10)
        try:
            found = conn.execute(
                "SELECT seq, body FROM messages WHERE seq > ? ORDER BY seq", (self._after,)
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # the hub has not made its tables yet
        finally:
            conn.close()
        new: list[tuple[str, int]] = []
        for seq, body in found:
            self._after = max(self._after, int(seq))
            parsed = parse_body(bytes(body))
            if parsed is not None:
                new.append(parsed)
        self.rows.extend(new)
        return new
