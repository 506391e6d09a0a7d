"""Module-to-module direct methods as IoT Hub's module SDK calls them on its gateway (pure):

    POST /twins/{device}/modules/{module}/methods?api-version=V
    x-ms-edge-moduleId: {device}/{caller}
    Authorization: SharedAccessSignature sr={hub}/devices/{device}/modules/{caller}&sig=...&se=...
    {"methodName": "...", "payload": ..., "responseTimeoutInSeconds": N}
    -> 200 {"status": <the module's status>, "payload": <its payload>}

The caller must prove it is the module its header names (a SAS token of that module); only
modules of this device can be called. Header names are lower case here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from edge_agent.edgehub.answer import Answer, error

# (calling module, token) -> whether the token proves that module
Admit = Callable[[str, str], bool]
# (target module, method, payload, timeout) -> (status, payload); None: not connected
Call = Callable[[str, str, Any, float], tuple[int, Any] | None]

DEFAULT_TIMEOUT = 30.0


def handle(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    device_id: str,
    admit: Admit,
    call: Call,
) -> Answer:
    parts = [unquote_plus(p) for p in urlsplit(target).path.strip("/").split("/")]
    if not (parts[:1] == ["twins"] and parts[-1:] == ["methods"] and len(parts) in (3, 5)):
        return error(404, f"no such path: {urlsplit(target).path}")
    if method != "POST":
        return error(405, f"{method} is not allowed on a methods path")
    caller_device, _, caller = (headers.get("x-ms-edge-moduleid") or "").partition("/")
    if caller_device != device_id or not caller:
        return error(401, "x-ms-edge-moduleId: must name a module of this device")
    if not admit(caller, headers.get("authorization") or ""):
        return error(401, "Authorization: no valid SAS token of the calling module")
    if len(parts) != 5 or parts[2] != "modules" or parts[1] != device_id:
        return error(501, "only modules of this device can be invoked through the edge hub")
    try:
        request = json.loads(body or b"null")
    except ValueError:
        return error(400, "the body is not JSON")
    if not isinstance(request, dict) or not isinstance(request.get("methodName"), str):
        return error(400, "methodName: a string is required")
    timeout = request.get("responseTimeoutInSeconds") or DEFAULT_TIMEOUT
    if not isinstance(timeout, int | float) or timeout <= 0:
        return error(400, "responseTimeoutInSeconds: a positive number is required")
    result = call(parts[3], request["methodName"], request.get("payload"), float(timeout))
    if result is None:
        return error(404, f"module {parts[3]!r} is not connected")
    status, payload = result
    return Answer(200, {"status": status, "payload": payload})
