"""How every console page is answered: Jinja2 with autoescape, security headers (a CSP with no inline script
or style), the injectable clock, and failures as plain pages, never a stack trace.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.transactions import in_unit_of_work
from domain.platform.database import CONNECTION_FAILURES
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.webhooks import endpoints

log = get_logger("keymeta.console")
T = TypeVar("T")
HERE = Path(__file__).parent

# No script may run and no style may be inlined: the pages need neither, and an injected tag then does nothing.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                           "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Portal links carry their token in the path: never leak it to another site through Referer.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.filters["when"] = _when


class PageError(Exception):
    """A refusal or failure shown as a page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now(request: Request) -> dt.datetime:
    """The console's clock: ``app.state.console_clock`` when a test sets one."""
    clock: Callable[[], dt.datetime] | None = getattr(request.app.state, "console_clock", None)
    return clock() if clock is not None else utcnow()


def master_key(request: Request) -> bytes:
    """The master key the API loaded at start-up (it refuses to start without one)."""
    key: bytes = request.app.state.master_key
    return key


def secure_headers(response: Response) -> None:
    response.headers.update(SECURITY_HEADERS)


def render(template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    response = HTMLResponse(templates.get_template(template).render(**context), status_code=http_status)
    secure_headers(response)
    return response


def redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    secure_headers(response)
    return response


async def in_transaction(work: Callable[[Session], T]) -> T:
    """``work(session)`` in one transaction, off the event loop; domain refusals and outages become pages."""
    try:
        return await in_unit_of_work(work)
    except endpoints.EndpointNotFound as exc:
        raise PageError(404, str(exc)) from exc
    except endpoints.EndpointError as exc:
        raise PageError(422, str(exc)) from exc
    except CONNECTION_FAILURES as exc:
        log.error("console.database_unavailable", error=str(exc))
        raise PageError(503, "The database cannot be reached right now. Try again in a moment.") from exc


async def page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return render("error.html", exc.status, message=exc.message, signed_in=False)
