"""The metadata family (create, update, delete, get), served as one bare ASGI app: the service's hot path.

FastAPI's router, dependency solver and exception layers cost more CPU per request than everything these
endpoints do besides signing and their one database round trip (docs/benchmarks.md). So
:class:`LicenseMetaEndpoint` answers the family's paths itself, inside the request-id and metrics middleware, and
hands every other path on to the application. Every operation answers at ``/api/v1/<name>`` and at ``/v1/<name>``
(the vendor's JavaScript SDK resolves paths against the host root): same handler, same audit. Their OpenAPI
operations are declared in :mod:`api.openapi`.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from api.client_ip import request_client_ip
from api.errors import database_unavailable
from api.idempotency import idempotent
from api.metrics import record_result_code
from api.parsing import BodyRejected, parse_params, read_body
from api.rate_limit import RateLimited, RequestRateLimiter
from domain.license_meta.codes import Code, ExtensionCode, Operation
from domain.license_meta.service import MetaRequest, MetaResult
from domain.platform.database import is_connection_failure
from domain.platform.task_names import AUDIT_RECORD, WEBHOOKS_FAN_OUT

PREFIXES = ("/api/v1/", "/v1/")


@dataclass(frozen=True)
class Route:
    """One served path: what Starlette leaves in ``scope["route"]`` (the metrics label) and what it runs."""

    path: str
    operation: Operation
    parameters: tuple[str, ...]


PARAMETERS: dict[Operation, tuple[str, ...]] = {
    Operation.CREATE: ("api_key", "license_key", "identifier", "key", "value"),
    Operation.UPDATE: ("api_key", "license_key", "identifier", "key", "value"),
    Operation.DELETE: ("api_key", "license_key", "identifier", "key"),
    Operation.GET: ("api_key", "license_key", "identifier", "key"),
}

ROUTES: dict[str, Route] = {
    prefix + operation.value: Route(prefix + operation.value, operation, PARAMETERS[operation])
    for operation in Operation for prefix in PREFIXES
}


class LicenseMetaEndpoint:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(get_route_path(scope)) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await (answer(request, route) if request.method == "POST" else wrong_method(request, route))
        except Exception as exc:
            if not is_connection_failure(exc):
                raise
            response = await database_unavailable(request, exc)
        await response(scope, receive, send)


async def answer(request: Request, route: Route) -> Response:
    http_status = None
    try:
        body = await read_body(request)
        params = await parse_params(request, body, route.parameters)
        values, errors = params.values, params.errors
    except BodyRejected as rejected:
        values, errors, http_status = {}, {"body": [rejected.reason]}, rejected.status
    # Before check 1 and before any idempotency key is looked at: a replay is a request like any other, and a
    # 429 is no decided answer, so a limited request neither reserves nor replays a key.
    limited = await _rate_limit(request, values.get("api_key"))
    if route.operation is Operation.GET or limited is not None:  # a read changes nothing: nothing to make idempotent
        return await _handle(request, route, values, errors, http_status, limited)
    # Keyed by the operation, not the path: /v1/<name> and /api/v1/<name> are one endpoint.
    return await idempotent(request, route.operation.value, values,
                            lambda: _handle(request, route, values, errors, http_status, None))


async def wrong_method(request: Request, route: Route) -> Response:
    """Every answer of these endpoints is signed and audited, a wrong method's 405 included."""
    response = await _handle(request, route, {}, {"method": [f"use POST, not {request.method}"]}, 405,
                             await _rate_limit(request, None))
    response.headers["Allow"] = "POST"
    return response


async def _rate_limit(request: Request, api_key: str | None) -> RateLimited | None:
    limiter: RequestRateLimiter = request.app.state.rate_limiter
    return await limiter.check(api_key, request_client_ip(request))


async def _handle(request: Request, route: Route, values: dict[str, str | None], errors: dict[str, list[str]],
                  http_status: int | None, limited: RateLimited | None) -> Response:
    state = request.app.state
    source_ip = request_client_ip(request)
    api_key = values.get("api_key")
    if limited is not None:  # refused before check 1, whatever else is wrong with the request
        errors, http_status = {}, None

    result = await state.license_meta.handle(MetaRequest(
        operation=route.operation,
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
    response = await state.signer.respond(
        result.code, result.signing_scope, extras=_extras(result),
        http_status=http_status if result.code is Code.INCORRECT_DATA else None,
        scheme=result.signature_scheme,
    )
    if limited is not None:
        response.headers["Retry-After"] = str(limited.retry_after)
    if result.event_id is not None:
        # Committed already; ringing only queues in memory, so the response never waits on the broker.
        request_id = request.scope["state"]["request_id"]
        state.doorbell.ring(AUDIT_RECORD, [result.event_id], request_id)
        if result.webhook:
            state.doorbell.ring(WEBHOOKS_FAN_OUT, [result.event_id], request_id)
    return response


def _extras(result: MetaResult) -> dict[str, object]:
    """Between ``message`` and ``timestamp``, in this order; an empty ``errors`` is left out (an envelope never
    carries an empty object), an empty ``meta`` list is not."""
    extras: dict[str, object] = {}
    if result.meta_id is not None:
        extras["meta_id"] = result.meta_id
    if result.meta is not None:
        extras["meta"] = result.meta
    if result.errors:
        extras["errors"] = result.errors
    return extras
