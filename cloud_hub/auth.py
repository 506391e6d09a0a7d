"""Authentication for the REST API: ``Depends(require(SCOPE))`` on a route; ``authorize`` is the
check itself (also used by the twin handler, which runs outside FastAPI's dependency solving).

Two schemes: ``Bearer <hub API token>`` and IoT Hub's ``SharedAccessSignature ...`` of a shared
access policy (``edgefleet.sas`` decides, ``cloud_hub.policies`` keeps the keys). A refused
signature, or a policy without the permission, is answered 401 in IoT Hub's error shape, as IoT
Hub answers; a bearer token without the scope is 403.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_hub.errors import Forbidden, IotHubUnauthorized, Unauthorized
from cloud_hub.hub import Hub
from cloud_hub.tokens import has_scope
from edgefleet import sas

# Declares the scheme in the OpenAPI schema; the header itself is read by ``authorize``.
_bearer = HTTPBearer(auto_error=False, description="A hub API token (edgefleet hub token create)")


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def _sas_scopes(hub: Hub, token: str, scope: str, path: str) -> frozenset[str]:
    store = hub.policies
    fresh = store.cached() is None
    if fresh:  # read them off the event loop
        await asyncio.get_running_loop().run_in_executor(None, store.load)
    try:
        try:
            policy = store.verify(token, time.time(), path)
        except sas.SasRejected:
            # A policy created or a key rotated since the cache was filled: read them again
            # (at most once a second, so refused tokens cannot flood the database).
            if fresh or not store.may_reload():
                raise
            await asyncio.get_running_loop().run_in_executor(None, store.load)
            policy = store.verify(token, time.time(), path)
    except sas.SasRejected as exc:
        raise IotHubUnauthorized(str(exc)) from None
    if not has_scope(policy.scopes, scope):
        raise IotHubUnauthorized(f"the policy {policy.name!r} lacks the permission ({scope})")
    return policy.scopes


async def authorize(
    hub: Hub, authorization: str | None, scope: str, path: str = "/"
) -> frozenset[str]:
    """The scopes of the bearer token or shared access signature in an ``Authorization`` header
    value, which must hold ``scope`` for a request to ``path``."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() == sas.SCHEME and token:
        return await _sas_scopes(hub, token, scope, path)
    if not (scheme and token) or scheme.lower() != "bearer":
        raise Unauthorized(
            "missing bearer token (Authorization: Bearer <token>)"
            " or shared access signature (Authorization: SharedAccessSignature ...)"
        )
    hit, scopes = hub.tokens.cached_scopes(token)
    if not hit:  # look it up off the event loop
        loop = asyncio.get_running_loop()
        scopes = await loop.run_in_executor(None, hub.tokens.scopes_of, token)
    if scopes is None:
        raise Unauthorized("invalid token")
    if not has_scope(scopes, scope):
        raise Forbidden(f"token lacks the {scope!r} scope")
    return scopes


def require(scope: str) -> Callable[..., Awaitable[frozenset[str]]]:
    """A dependency that admits a request only with a valid token holding ``scope``."""

    async def check(
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> frozenset[str]:
        return await authorize(
            request.app.state.hub, request.headers.get("authorization"), scope, request.url.path
        )

    return check
