"""IoT Edge's workload API, as decisions (pure): what IoT Hub's module SDK asks of it in
``create_from_edge_environment`` and for every SAS token it renews.

    GET  /trust-bundle?api-version=V                    -> 200 {"certificate": PEM}
    POST /modules/{m}/genid/{g}/sign?api-version=V      -> 200 {"digest": base64}
         {"keyId": "primary", "algo": "HMACSHA256", "data": base64}

Every module has a socket of its own, and the socket a request arrives on names the caller: a
signature is made only for that module, with its current generation id, with its own key. Errors
answer ``{"message": ...}`` naming the field at fault.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from edge_agent.edgehub.answer import Answer, error
from edge_agent.edgehub.credentials import ModuleIdentity, key_bytes


def handle(
    method: str,
    target: str,
    body: bytes,
    trust_bundle: str,
    identity_of: Callable[[str], ModuleIdentity | None],
    caller: str,
) -> Answer:
    """The answer to one request (``target``: path and query as sent) from module ``caller``
    (the module whose socket it came on)."""
    url = urlsplit(target)
    if not parse_qs(url.query).get("api-version", [""])[0]:
        return error(400, "the query parameter 'api-version' is required")
    parts = [unquote(p) for p in url.path.strip("/").split("/")]
    if parts == ["trust-bundle"]:
        if method != "GET":
            return error(405, f"{method} is not allowed on /trust-bundle")
        return Answer(200, {"certificate": trust_bundle})
    if len(parts) == 5 and parts[0] == "modules" and parts[2] == "genid" and parts[4] == "sign":
        if method != "POST":
            return error(405, f"{method} is not allowed on the sign path")
        if parts[1] != caller:
            return error(403, f"module {caller!r} may not sign for module {parts[1]!r}")
        return sign(parts[1], parts[3], body, identity_of(parts[1]))
    return error(404, f"no such workload API path: {url.path}")


def sign(module_id: str, generation_id: str, body: bytes, ident: ModuleIdentity | None) -> Answer:
    """HMAC-SHA256 of ``data`` with the module's key, for that module and generation only."""
    if ident is None:
        return error(404, f"module {module_id!r} is not a module of this device")
    if not hmac.compare_digest(generation_id.encode(), ident.generation_id.encode()):
        return error(403, f"generation id {generation_id!r} is not module {module_id!r}'s")
    try:
        request = json.loads(body or b"null")
    except ValueError:
        return error(400, "the body is not JSON")
    if not isinstance(request, dict):
        return error(400, "the body must be a JSON object")
    if request.get("keyId") != "primary":
        return error(400, "keyId: only 'primary' is supported")
    if request.get("algo") != "HMACSHA256":
        return error(400, "algo: only 'HMACSHA256' is supported")
    data = request.get("data")
    if not isinstance(data, str):
        return error(400, "data: a base64 string is required")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return error(400, "data: not valid base64")
    digest = hmac.new(key_bytes(ident.key), raw, hashlib.sha256).digest()
    return Answer(200, {"digest": base64.b64encode(digest).decode()})
