"""Service-layer errors; the REST layer maps each to its HTTP status."""

from __future__ import annotations

import uuid

from edgefleet.utctime import utc_now


class HubError(Exception):
    """Base error: ``status`` is the HTTP status, ``code`` an IoT Hub-style error code."""

    status = 400
    code = "BadRequest"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"errorCode": self.code, "message": self.message}
        if self.path is not None:
            body["path"] = self.path
        return body


class InvalidInput(HubError):
    status = 400
    code = "ArgumentInvalid"


class NotFound(HubError):
    status = 404
    code = "NotFound"


class DeviceNotFound(NotFound):
    code = "DeviceNotFound"


class ModuleNotFound(NotFound):
    code = "ModuleNotFound"


class AlreadyExists(HubError):
    status = 409
    code = "DeviceAlreadyExists"


class PreconditionFailed(HubError):
    status = 412
    code = "PreconditionFailed"


class Unauthorized(HubError):
    status = 401
    code = "IotHubUnauthorizedAccess"


class IotHubUnauthorized(Unauthorized):
    """A refused shared access signature (or one without the permission), answered in IoT Hub's
    own error shape, which its SDKs and tools expect."""

    def to_json(self) -> dict[str, object]:
        tracking = uuid.uuid4().hex
        stamp = utc_now().strftime("%m/%d/%Y %H:%M:%S")
        return {
            "Message": f"ErrorCode:{self.code};Unauthorized",
            "ExceptionMessage": f"{self.message}. Tracking ID:{tracking}-TimeStamp:{stamp}",
        }


class Forbidden(HubError):
    status = 403
    code = "Forbidden"
