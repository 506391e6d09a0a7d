"""What every dashboard route shares: templates, the signed-in user, CSRF checks, form bodies.

The user's rights are the scopes of the API token the session was opened with, looked up through
``hub.tokens`` on each request (as the REST API does), so the UI never grants more than the token.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_DEPLOY, SCOPE_REGISTRY_WRITE, has_scope
from cloud_hub.ui.sessions import LoginCodes, SessionStore, UiSession
from cloud_hub.ui.views import short_time

COOKIE = "edgefleet_ui"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 2 * 1024 * 1024

_env = Environment(
    loader=PackageLoader("cloud_hub.ui", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
_env.filters["when"] = short_time


class LoginRequired(Exception):
    """No valid session: pages redirect to the sign-in form, fragments and writes get 401."""


class UiRefused(Exception):
    """A refused dashboard request (403 without the scope or the CSRF token), shown as a page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UiUser:
    session: UiSession
    scopes: frozenset[str]

    @property
    def can_write(self) -> bool:
        return has_scope(self.scopes, SCOPE_REGISTRY_WRITE)

    @property
    def can_deploy(self) -> bool:
        return has_scope(self.scopes, SCOPE_DEPLOY)

    def need(self, scope: str) -> None:
        if not has_scope(self.scopes, scope):
            raise UiRefused(403, f"your token lacks the {scope!r} scope")


@dataclass
class UiState:
    hub: Hub
    sessions: SessionStore
    codes: LoginCodes
    #: set when the hub begins to stop: open event streams end
    stopping: threading.Event = field(default_factory=threading.Event)


def ui_state(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


async def token_scopes(hub: Hub, token: str) -> frozenset[str] | None:
    hit, scopes = hub.tokens.cached_scopes(token)
    if not hit:
        loop = asyncio.get_running_loop()
        scopes = await loop.run_in_executor(None, hub.tokens.scopes_of, token)
    return scopes


async def current_user(request: Request) -> UiUser:
    """FastAPI dependency: the signed-in user (LoginRequired otherwise)."""
    state = ui_state(request)
    session = state.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired()
    scopes = await token_scopes(state.hub, session.token)
    if scopes is None:  # the token is gone
        state.sessions.close(session.id)
        raise LoginRequired()
    return UiUser(session, scopes)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (last value of each field); 413 beyond MAX_FORM_BYTES. A form
    another site makes a browser post (the browser says so in Sec-Fetch-Site) is refused, sign-in
    included."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise UiRefused(403, "a form posted from another site is refused")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise UiRefused(413, "form too large")
    try:
        pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise UiRefused(400, "form is not UTF-8") from exc
    return {k: v[-1] for k, v in pairs.items()}


async def write_form(request: Request, user: UiUser, scope: str) -> dict[str, str]:
    """The form of a write, after the CSRF check (field ``csrf`` or header X-CSRF-Token) and the
    scope check."""
    form = await read_form(request)
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not secrets.compare_digest(sent.encode(), user.session.csrf.encode()):
        raise UiRefused(403, "CSRF check failed: reload the page and try again")
    user.need(scope)
    return form


def render(
    request: Request,
    template: str,
    user: UiUser | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = _env.get_template(template).render(
        request=request,
        user=user,
        csrf=user.session.csrf if user else "",
        static="/ui/static",
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def is_fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        target = "/ui/login?next=" + quote(request.url.path)
        if request.method == "GET" and not is_fragment(request):
            return RedirectResponse(target, status_code=303)
        return Response("sign in first", status_code=401, headers={"HX-Redirect": target})

    @app.exception_handler(UiRefused)
    async def refused(request: Request, exc: UiRefused) -> Response:
        if is_fragment(request):
            return HTMLResponse(
                f'<p class="error" role="alert">{_escape(exc.message)}</p>',
                status_code=exc.status,
            )
        return render(request, "error.html", None, status_code=exc.status, message=exc.message)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
