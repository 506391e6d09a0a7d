"""IoT Hub connection strings: ``HostName=h;DeviceId=d;SharedAccessKey=k`` (``ModuleId``,
``GatewayHostName``, ``SharedAccessKeyName`` and ``x509=true`` as IoT Hub defines them)."""

from __future__ import annotations


class ConnectionStringError(ValueError):
    pass


def parse_connection_string(text: str, required: tuple[str, ...] = ()) -> dict[str, str]:
    """Key=Value pairs separated by ``;`` (a value may itself hold ``=``, as base64 keys do)."""
    parts: dict[str, str] = {}
    for item in text.strip().split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConnectionStringError(f"connection string part {item!r} is not Key=Value")
        parts[key.strip()] = value
    for name in required:
        if not parts.get(name):
            raise ConnectionStringError(f"connection string lacks {name}")
    return parts
