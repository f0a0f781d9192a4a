"""``Idempotency-Key`` on a mutation (docs/api.md, "Idempotency keys"): the first decided answer per (API key,
key) is replayed byte for byte; a reuse with other parameters, a repeat while the first request runs and a
malformed key get signed refusals of their own.

An endpoint wraps its work in :func:`idempotent`. Only the reservation needs the database before the work;
when that fails, the request is answered 503 and nothing runs, so a retry with the same key is always safe.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from api.client_ip import request_client_ip
from api.errors import database_unavailable
from api.metrics import record_result_code
from domain.access.checks import ApiKeyRecord, api_key_digest
from domain.idempotency.audit import audit_answer
from domain.idempotency.codes import IDEMPOTENCY_REFUSED, IDEMPOTENT_REPLAY
from domain.idempotency.keys import fingerprint, is_decided, key_problem
from domain.idempotency.service import IdempotencyKeys
from domain.idempotency.store import Claim, Reservation, ReservationOutcome, StoredResponse
from domain.license_meta.codes import AnyCode, Code, ExtensionCode
from domain.license_meta.service import USER_AGENT_MAX, mask_license_key
from domain.platform.database import is_connection_failure
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.platform.task_names import AUDIT_RECORD
from domain.signing.envelope import DEFAULT_SCHEME, SignatureScheme
from domain.signing.keys import GLOBAL_SCOPE

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
# What a replay repeats besides status and body. X-Request-Id is not among them: it names this request.
KEPT_HEADERS = ("content-type", "x-signature-key-id", "x-signature-scheme")
_REFUSALS = {ReservationOutcome.IN_PROGRESS: ExtensionCode.IDEMPOTENCY_IN_PROGRESS,
             ReservationOutcome.MISMATCH: ExtensionCode.IDEMPOTENCY_KEY_REUSED}

log = get_logger("keymeta.idempotency")


async def idempotent(request: Request, endpoint: str, values: Mapping[str, object],
                     handle: Callable[[], Awaitable[Response]], *,
                     clock: Callable[[], dt.datetime] = utcnow) -> Response:
    """``handle()`` once per (API key, Idempotency-Key) and parameters; without the header, just ``handle()``.

    ``endpoint`` names the operation (it is part of the fingerprint), ``values`` are the parsed parameters.
    A request without an API key has no scope for its key and goes straight to ``handle()`` (it is a 100).
    """
    header_values = request.headers.getlist(HEADER)
    if not header_values:
        return await handle()
    api_key = values.get("api_key")
    scope = api_key_digest(api_key) if isinstance(api_key, str) and api_key else None
    problem = key_problem(header_values)
    if problem is None and scope is None:
        return await handle()
    state = request.app.state
    now = clock()
    reservation: Reservation | None = None
    key: ApiKeyRecord | None = None
    code = 0
    try:
        if problem is None:
            assert scope is not None
            reservation = await state.idempotency.reserve(Claim(
                scope, header_values[0], fingerprint(endpoint, values), now, state.settings.idempotency_ttl_seconds))
        if reservation is None or reservation.outcome is not ReservationOutcome.PROCEED:
            # Answered here, not by the endpoint: one cached lookup names the actor and the signature scheme.
            # The connection is returned before any signing: that takes a connection of its own.
            async with state.engine.connect() as conn:
                key = await state.license_meta.api_key_record(
                    api_key if isinstance(api_key, str) and api_key else None, lambda: _ready(conn))
                code, event_type = _self_answer(reservation)
                await _audit(request, conn, event_type, key.id if key is not None else None, endpoint, values,
                             code, now)
    except Exception as exc:
        if not is_connection_failure(exc):
            raise
        return await database_unavailable(request, exc)  # nothing ran: the client may retry with the same key
    if reservation is not None and reservation.outcome is ReservationOutcome.PROCEED:
        return await _run(request, reservation, handle)
    if reservation is not None and reservation.outcome is ReservationOutcome.REPLAY:
        return _replay(request, reservation, code)
    scheme = key.signature_scheme if key is not None else DEFAULT_SCHEME
    if reservation is None:
        return await _signed(request, scheme, Code.INCORRECT_DATA, 400, {"errors": {"idempotency_key": [problem]}})
    refusal = _REFUSALS[reservation.outcome]
    response = await _signed(request, scheme, refusal, refusal.http_status, {})
    if refusal is ExtensionCode.IDEMPOTENCY_IN_PROGRESS:
        response.headers["Retry-After"] = "1"
    return response


def _self_answer(reservation: Reservation | None) -> tuple[int, str]:
    """The code and audit event type of an answer the layer gives itself: a malformed key (no reservation), a
    replay (the stored answer's code) or a refusal."""
    if reservation is None:
        return Code.INCORRECT_DATA, IDEMPOTENCY_REFUSED
    if reservation.outcome is ReservationOutcome.REPLAY:
        assert reservation.response is not None
        return _code_of(reservation.response.body) or 0, IDEMPOTENT_REPLAY  # kept answers are envelopes
    return _REFUSALS[reservation.outcome], IDEMPOTENCY_REFUSED


async def _run(request: Request, reservation: Reservation, handle: Callable[[], Awaitable[Response]]) -> Response:
    """The held key's work; its answer is kept when decided, else the key is freed for a retry."""
    keys: IdempotencyKeys = request.app.state.idempotency
    try:
        response = await handle()
    except TimeoutError:
        # The database stopped answering: the write may have committed. The key stays in progress until its
        # lease ends, so a retry meanwhile gets 409 rather than running the write a second time.
        log.warning("idempotency.outcome_unknown", path=request.url.path)
        raise
    except BaseException:
        with anyio.CancelScope(shield=True):  # a cancelled request must still free its key
            await _release_quietly(keys, reservation)
        raise
    try:
        if is_decided(response.status_code, _envelope_code(response)):
            kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
            await keys.record(reservation, StoredResponse(response.status_code, kept, bytes(response.body)))
        else:
            await keys.release(reservation)
    except Exception as exc:
        if not is_connection_failure(exc):
            raise
        # The work is done and its answer is the truth: send it. The key stays in progress until its lease ends.
        log.error("idempotency.record_failed", error=str(exc), path=request.url.path)
    return response


async def _release_quietly(keys: IdempotencyKeys, reservation: Reservation) -> None:
    try:
        await keys.release(reservation)
    except Exception as exc:  # noqa: BLE001 - the handler's own error is the one to report; the lease ends it
        log.warning("idempotency.release_failed", error=str(exc))


def _replay(request: Request, reservation: Reservation, code: int) -> Response:
    stored = reservation.response
    assert stored is not None
    record_result_code(request, code)
    return Response(content=stored.body, status_code=stored.status,
                    headers={**stored.headers, REPLAYED_HEADER: "true"})


async def _signed(request: Request, scheme: SignatureScheme, code: AnyCode, http_status: int,
                  extras: dict[str, Any]) -> Response:
    """Signed by the global key, in the presented key's signature scheme."""
    record_result_code(request, code)
    response: Response = await request.app.state.signer.respond(code, GLOBAL_SCOPE, http_status=http_status,
                                                                extras=extras, scheme=scheme)
    return response


async def _audit(request: Request, conn: Any, event_type: str, api_key_id: int | None, endpoint: str,
                 values: Mapping[str, object], code: int, now: dt.datetime) -> None:
    state = request.app.state
    license_key = values.get("license_key")
    context = {
        "source_ip": request_client_ip(request),
        "user_agent": (request.headers.get("user-agent") or "")[:USER_AGENT_MAX] or None,
        "identifier": _text(values.get("identifier")),
        "license_key_masked": mask_license_key(license_key if isinstance(license_key, str) else None),
        "meta_key": _text(values.get("key")),
        "product_id": None,
        "detail": {"endpoint": endpoint},
    }
    request_id = request.scope.get("state", {}).get("request_id")
    event_id = await audit_answer(conn, event_type, api_key_id, context, outcome_code=int(code), request_id=request_id,
                                  now=now)
    state.doorbell.ring(AUDIT_RECORD, [event_id], request_id)


async def _ready(conn: AsyncConnection) -> AsyncConnection:
    return conn


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _envelope_code(response: Response) -> int | None:
    body = getattr(response, "body", None)
    return _code_of(body) if isinstance(body, bytes | memoryview) else None


def _code_of(body: bytes | memoryview) -> int | None:
    """The envelope's ``response.code``, or None when the body is no envelope."""
    try:
        document = json.loads(bytes(body))
    except ValueError:
        return None
    inner = document.get("response") if isinstance(document, dict) else None
    code = inner.get("code") if isinstance(inner, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None
