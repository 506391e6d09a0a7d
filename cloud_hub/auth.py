"""Bearer-token authentication for the REST API: ``Depends(require(SCOPE))`` on a route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_hub.errors import Forbidden, Unauthorized
from cloud_hub.hub import Hub
from cloud_hub.tokens import has_scope

_bearer = HTTPBearer(auto_error=False, description="A hub API token (edgefleet hub token create)")


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def require(scope: str) -> Callable[..., Awaitable[frozenset[str]]]:
    """A dependency that admits a request only with a valid token holding ``scope``."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> frozenset[str]:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        hub: Hub = request.app.state.hub
        hit, scopes = hub.tokens.cached_scopes(credentials.credentials)
        if not hit:  # look it up off the event loop
            scopes = await run_in_threadpool(hub.tokens.scopes_of, credentials.credentials)
        if scopes is None:
            raise Unauthorized("invalid token")
        if not has_scope(scopes, scope):
            raise Forbidden(f"token lacks the {scope!r} scope")
        return scopes

    return check
