"""POST /api/v1/create-license-key-meta, served as a bare ASGI app: the service's hot path.

FastAPI's router, dependency solver and exception layers cost more CPU per request than everything this
endpoint does besides signing and its one database round trip (docs/benchmarks.md). So
:class:`CreateMetaEndpoint` answers this path itself, inside the request-id and metrics middleware, and hands
every other path on to the application. Its OpenAPI operations are declared in :mod:`api.openapi`.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from api.client_ip import client_ip
from api.errors import database_unavailable
from api.metrics import record_result_code
from api.parsing import BodyRejected, parse_create_meta, read_body
from domain.license_meta.codes import Code, ExtensionCode
from domain.license_meta.service import CreateMetaInput
from domain.platform.task_names import AUDIT_RECORD, WEBHOOKS_FAN_OUT

PATH = "/api/v1/create-license-key-meta"


class Route:
    """What Starlette leaves in ``scope["route"]``: the metrics middleware labels requests by its path."""

    path = PATH


ROUTE = Route()


class CreateMetaEndpoint:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or get_route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE
        request = Request(scope, receive)
        try:
            response = await (create_license_key_meta(request) if request.method == "POST"
                              else wrong_method(request))
        except OperationalError as exc:
            response = await database_unavailable(request, exc)
        await response(scope, receive, send)


async def create_license_key_meta(request: Request) -> Response:
    http_status = None
    try:
        body = await read_body(request)
        params = await parse_create_meta(request, body)
        values, errors = params.values, params.errors
    except BodyRejected as rejected:
        values, errors, http_status = {}, {"body": [rejected.reason]}, rejected.status
    return await _handle(request, values, errors, http_status)


async def wrong_method(request: Request) -> Response:
    """Every answer of this endpoint is signed and audited, a wrong method's 405 included."""
    response = await _handle(request, {}, {"method": [f"use POST, not {request.method}"]}, 405)
    response.headers["Allow"] = "POST"
    return response
async def _handle(request: Request, values: dict[str, str | None], errors: dict[str, list[str]],
                  http_status: int | None) -> Response:
    state = request.app.state
    peer = request.client.host if request.client else None
    # Several X-Forwarded-For lines are one list (RFC 9110 §5.3): a proxy that appends its own line
    # after the client's must not leave us reading only the client-written first one.
    forwarded_for = ",".join(request.headers.getlist("x-forwarded-for")) or None
    source_ip = client_ip(peer, forwarded_for, state.trusted_proxies)
    api_key = values.get("api_key")
    # Before check 1: an abusive caller is refused before any lookup of its key or license.
    limited = await state.rate_limiter.check(api_key, source_ip)
    if limited is not None:
        errors, http_status = {}, None

    result = await state.create_meta.handle(CreateMetaInput(
        api_key=api_key,
        license_key=values.get("license_key"),
        identifier=values.get("identifier"),
        key=values.get("key"),
        value=values.get("value"),
        source_ip=source_ip,
        user_agent=request.headers.get("user-agent"),
        request_id=request.scope["state"]["request_id"],
        errors=errors,
        refusal=ExtensionCode.RATE_LIMITED if limited is not None else None,
        refusal_errors=limited.errors() if limited is not None else {},
    ))
    if result.code in (Code.INVALID_API_KEY, Code.INACTIVE_API_KEY):
        await state.rate_limiter.failed_authentication(source_ip)
    record_result_code(request, result.code)
    extras: dict[str, object] = {}
    if result.meta_id is not None:
        extras["meta_id"] = result.meta_id
    if result.errors:
        extras["errors"] = result.errors
    response = await state.signer.respond(
        result.code, result.signing_scope, extras=extras,
        http_status=http_status if result.code is Code.INCORRECT_DATA else None,
    )
    if limited is not None:
        response.headers["Retry-After"] = str(limited.retry_after)
    if result.event_id is not None:
        # Committed already; ringing only queues in memory, so the response never waits on the broker.
        request_id = request.scope["state"]["request_id"]
        state.doorbell.ring(AUDIT_RECORD, [result.event_id], request_id)
        if result.code is Code.META_CREATED:
            state.doorbell.ring(WEBHOOKS_FAN_OUT, [result.event_id], request_id)
    return response
