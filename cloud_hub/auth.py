"""Bearer-token authentication for the REST API: ``Depends(require(SCOPE))`` on a route;
``authorize`` is the check itself (also used by the twin handler, which runs outside FastAPI's
dependency solving)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_hub.errors import Forbidden, Unauthorized
from cloud_hub.hub import Hub
from cloud_hub.tokens import has_scope

# Declares the scheme in the OpenAPI schema; the header itself is read by ``authorize``.
_bearer = HTTPBearer(auto_error=False, description="A hub API token (edgefleet hub token create)")


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def authorize(hub: Hub, authorization: str | None, scope: str) -> frozenset[str]:
    """The scopes of the bearer token in an ``Authorization`` header value, which must hold
    ``scope`` (Unauthorized without a valid token, Forbidden without the scope)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if not (scheme and token) or scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
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
        return await authorize(request.app.state.hub, request.headers.get("authorization"), scope)

    return check
