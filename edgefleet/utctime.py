"""Times as IoT Hub and IoT Edge print them: ISO 8601 in UTC with a trailing ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_text(moment: datetime, timespec: str = "auto") -> str:
    """``2026-01-02T03:04:05.123456Z``; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_utc_text(text: str) -> datetime:
    """The inverse of ``utc_text`` (any ISO 8601 offset is accepted; naive means UTC).
    Raises ValueError for text that is no ISO 8601 time."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
