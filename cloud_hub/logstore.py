"""Module logs uploaded by ``$edgeAgent``'s ``uploadModuleLogs`` (IoT Edge sends them to a blob).

A device gets a capability token (in an upload URL, valid ``TTL_SECS``); only its SHA-256 is
stored (table ``log_upload_tokens``). Each upload is one row of ``log_uploads`` holding the bytes
(at most ``MAX_BYTES``), so every hub process on one database can serve it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from cloud_hub.db import Database
from cloud_hub.errors import DeviceNotFound, HubError, InvalidInput, NotFound
from cloud_hub.models import DeviceRow, LogUploadRow, LogUploadTokenRow
from cloud_hub.twindoc import iso
from edgefleet.utctime import utc_now

NAME_RE = re.compile(r"^[A-Za-z0-9$][A-Za-z0-9._$-]{0,127}$")
TTL_SECS = 3600
MAX_BYTES = 64 * 1024 * 1024


class UploadRefused(HubError):
    status = 401
    code = "Unauthorized"


class TooLarge(HubError):
    status = 413
    code = "RequestEntityTooLarge"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class LogUploads:
    """Upload tokens and uploaded logs, both in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def new_token(self, device_id: str) -> str:
        """A fresh upload secret for one device (shown once); purges expired tokens."""
        now = utc_now()
        token = secrets.token_urlsafe(24)
        with self.db.write() as session:
            if session.get(DeviceRow, device_id) is None:
                raise DeviceNotFound(f"device {device_id!r} not found", path="deviceId")
            session.execute(delete(LogUploadTokenRow).where(LogUploadTokenRow.expires_at <= now))
            session.add(
                LogUploadTokenRow(
                    token_hash=_digest(token),
                    device_id=device_id,
                    expires_at=now + timedelta(seconds=TTL_SECS),
                    created_at=now,
                )
            )
        return token

    def device_for(self, token: str) -> str:
        """The device an unexpired token belongs to; ``UploadRefused`` otherwise."""
        with self.db.read() as session:
            device_id = session.scalar(
                select(LogUploadTokenRow.device_id).where(
                    LogUploadTokenRow.token_hash == _digest(token),
                    LogUploadTokenRow.expires_at > utc_now(),
                )
            )
        if device_id is None:
            raise UploadRefused("unknown or expired upload token")
        return device_id

    def store(self, token: str, module: str, content: bytes) -> dict[str, Any]:
        """Keep one module's logs; the name is ``<module>-<UTC stamp>.json[.gz]``."""
        device_id = self.device_for(token)
        if not NAME_RE.match(module):
            raise InvalidInput("invalid module name", path="module")
        if len(content) > MAX_BYTES:
            raise TooLarge(f"log upload over {MAX_BYTES} bytes", path="body")
        suffix = ".json.gz" if content[:2] == b"\x1f\x8b" else ".json"
        for attempt in range(5):
            now = utc_now()
            stamp = now.strftime("%Y%m%dT%H%M%S%fZ") + (f"{attempt}" if attempt else "")
            name = f"{module}-{stamp}{suffix}"
            try:
                with self.db.write() as session:
                    session.add(
                        LogUploadRow(
                            device_id=device_id,
                            name=name,
                            module=module,
                            size=len(content),
                            content=content,
                            created_at=now,
                        )
                    )
                return {"name": name, "bytes": len(content)}
            except IntegrityError:
                # the same name from a concurrent upload (or the device was just deleted)
                self.device_for(token)
        raise UploadRefused("could not store the upload")

    def uploads(self, device_id: str) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.execute(
                select(
                    LogUploadRow.name,
                    LogUploadRow.module,
                    LogUploadRow.size,
                    LogUploadRow.created_at,
                )
                .where(LogUploadRow.device_id == device_id)
                .order_by(LogUploadRow.name)
            ).all()
        return [
            {"name": r.name, "module": r.module, "bytes": r.size, "uploadedAt": iso(r.created_at)}
            for r in rows
        ]

    def read(self, device_id: str, name: str) -> bytes:
        with self.db.read() as session:
            content = session.scalar(
                select(LogUploadRow.content).where(
                    LogUploadRow.device_id == device_id, LogUploadRow.name == name
                )
            )
        if content is None:
            raise NotFound("no such upload", path="name")
        return bytes(content)
