"""POST /api/v1/create-license-key-meta."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.client_ip import client_ip
from api.metrics import record_result_code
from api.openapi import create_meta_operation
from api.parsing import BodyRejected, parse_create_meta, read_body
from domain.codes import Code, ExtensionCode
from domain.create_meta import CreateMetaInput
from domain.tasks import AUDIT_RECORD, WEBHOOKS_FAN_OUT

router = APIRouter()
PATH = "/api/v1/create-license-key-meta"


@router.post(PATH, openapi_extra=create_meta_operation())
async def create_license_key_meta(request: Request) -> Response:
    http_status = None
    try:
        body = await read_body(request)
        params = await parse_create_meta(request, body)
        values, errors = params.values, params.errors
    except BodyRejected as rejected:
        values, errors, http_status = {}, {"body": [rejected.reason]}, rejected.status
    return await _handle(request, values, errors, http_status)


@router.api_route(PATH, methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
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
    # Before SPEC step 1: an abusive caller is refused before any lookup of its key or license.
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
