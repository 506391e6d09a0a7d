"""Sign-in (API token or one-time code) and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from cloud_hub.auth import require
from cloud_hub.tokens import SCOPE_REGISTRY_READ
from cloud_hub.ui.web import (
    COOKIE,
    UiUser,
    current_user,
    read_form,
    render,
    token_scopes,
    ui_state,
    write_form,
)

router = APIRouter(prefix="/ui")


def _safe_next(target: str | None) -> str:
    """Only a dashboard path (no other host, no scheme) to go to after signing in."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui"


def _signed_in(request: Request, token: str, target: str) -> Response:
    session = ui_state(request).sessions.open(token)
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        COOKIE,
        session.id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/ui", code: str = "") -> Response:
    if code:  # a one-time sign-in link
        token = ui_state(request).codes.redeem(code)
        if token is not None and await token_scopes(ui_state(request).hub, token) is not None:
            return _signed_in(request, token, next)
        expired = "this sign-in link was used or has expired"
        return render(request, "login.html", next=_safe_next(next), error=expired, status_code=401)
    return render(request, "login.html", next=_safe_next(next), error="")


@router.post("/login")
async def login(request: Request) -> Response:
    form = await read_form(request)
    token = form.get("token", "").strip()
    target = form.get("next", "/ui")
    if not token or await token_scopes(ui_state(request).hub, token) is None:
        return render(
            request, "login.html", next=_safe_next(target), error="unknown token", status_code=401
        )
    return _signed_in(request, token, target)


@router.post("/login-codes", dependencies=[Depends(require(SCOPE_REGISTRY_READ))])
async def login_code(request: Request) -> Response:
    """A one-time sign-in link for the bearer token of this request (``edgefleet demo`` prints
    one): the code opens one session with that token's scopes, once, within its lifetime."""
    token = request.headers["authorization"].partition(" ")[2].strip()
    codes = ui_state(request).codes
    code = codes.issue(token)
    return JSONResponse(
        {
            "code": code,
            "path": f"/ui/login?code={code}",
            "expiresInSeconds": int(codes.ttl_seconds),
        },
        status_code=201,
    )


@router.post("/logout")
async def logout(request: Request, user: UiUser = Depends(current_user)) -> Response:
    await write_form(request, user, "registry:read")
    ui_state(request).sessions.close(user.session.id)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
