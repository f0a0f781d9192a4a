"""Who is at the console: the signed session cookie, re-checked against its API key on every request, and
the CSRF token every form must carry back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from api.client_ip import request_client_ip
from api.console.web import PageError, master_key, now, redirect
from domain.access.checks import check_access, load_api_key, load_api_key_by_id, load_blocklist, parse_address
from domain.console import sessions
from domain.console.tokens import BadToken, mac
from domain.license_meta.codes import CONSOLE_CAPABILITY, Code
from domain.platform.database import CONNECTION_FAILURES
from domain.webhooks.audit_events import Actor

SESSION_COOKIE = "km_console"
SIGN_IN_COOKIE = "km_console_sign_in"
COOKIE_PATH = "/console"
SIGN_IN_PATH = "/console/sign-in"


class SignInRequired(Exception):
    """No usable session: back to the sign-in page, saying why (a fixed reason code, never free text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Operator:
    session: sessions.ConsoleSession
    csrf: str
    actor: Actor
    cookie: str  # the session with its idle clock restarted


def set_cookie(request: Request, response: Response, name: str, value: str, path: str = COOKIE_PATH) -> None:
    response.set_cookie(name, value, path=path, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


async def key_refusal(request: Request, api_key_id: int | None,
                      key_digest: str | None = None) -> tuple[Code | None, int | None]:
    """Checks 1–5 of docs/api.md for the ``console`` capability; the refusal (or None) and the key's id."""
    try:
        async with request.app.state.engine.connect() as conn:
            if key_digest is not None:
                key = await load_api_key(conn, key_digest)
            else:
                key = await load_api_key_by_id(conn, api_key_id) if api_key_id is not None else None
            blocklist = await load_blocklist(conn)
    except CONNECTION_FAILURES as exc:
        raise PageError(503, "The database cannot be reached right now. Try again in a moment.") from exc
    address = parse_address(request_client_ip(request))
    return check_access(key, CONSOLE_CAPABILITY, address, None, blocklist, now(request)), key.id if key else None


def actor_of(request: Request, api_key_id: int) -> Actor:
    return Actor(sessions.actor_label(api_key_id), api_key_id=api_key_id, source_ip=request_client_ip(request),
                 request_id=request.scope.get("state", {}).get("request_id"))


async def operator(request: Request) -> Operator:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired("signed-out")
    key = sessions.session_key(master_key(request))
    settings = request.app.state.settings
    try:
        session = sessions.decode(
            key, token, now(request),
            idle_seconds=settings.console_session_idle_seconds,
            max_age_seconds=settings.console_session_max_age_seconds)
    except sessions.SessionExpired as exc:
        raise SignInRequired("expired") from exc
    except BadToken as exc:
        raise SignInRequired("signed-out") from exc
    refusal, _ = await key_refusal(request, session.api_key_id)
    if refusal is not None:
        raise SignInRequired("key-refused")
    session = sessions.touch(session, now(request))
    return Operator(session, sessions.csrf_token(key, session), actor_of(request, session.api_key_id),
                    sessions.encode(key, session))


SignedIn = Annotated[Operator, Depends(operator)]


async def checked_form(request: Request, who: Operator) -> FormData:
    """The posted form, refused unless it carries this session's CSRF token."""
    form = await request.form()
    token = form.get("csrf")
    key = sessions.session_key(master_key(request))
    if not isinstance(token, str) or not sessions.csrf_valid(key, who.session, token):
        raise PageError(403, "This form was not sent from your console session. Reload the page and try again.")
    return form


def keep_session(request: Request, response: Response, who: Operator) -> Response:
    set_cookie(request, response, SESSION_COOKIE, who.cookie)
    return response


def sign_in_nonce() -> str:
    return secrets.token_urlsafe(16)


def sign_in_csrf(request: Request, nonce: str) -> str:
    return mac(sessions.session_key(master_key(request)), f"sign-in:{nonce}")


def sign_in_csrf_valid(request: Request, form_token: object) -> bool:
    nonce = request.cookies.get(SIGN_IN_COOKIE)
    if not nonce or not isinstance(form_token, str):
        return False
    return secrets.compare_digest(sign_in_csrf(request, nonce), form_token)


async def sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    response = redirect(f"{SIGN_IN_PATH}?reason={exc.reason}")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response
