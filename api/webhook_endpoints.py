"""Admin API for webhook endpoints: ``/api/v1/webhook-endpoints`` (plain JSON, not the signed envelope).

Guarded by an API key with the ``manage-webhooks`` capability (``Authorization: Bearer`` or ``X-API-Key``),
checked like the create-meta key (digest lookup, active, expiry, allowed CIDRs, IP block list).
401: no/unknown/inactive key; 403: key lacks the capability or may not be used from this address;
404: unknown id; 409: duplicate endpoint; 422: refused input.
Database work runs in the thread pool over the same domain services as the CLI (the request owns the
transaction), so the event loop never blocks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api.client_ip import request_client_ip
from api.transactions import in_unit_of_work
from domain.access.api_keys import MANAGE_WEBHOOKS_CAPABILITY
from domain.access.checks import api_key_digest, check_access, load_api_key, load_blocklist, parse_address
from domain.events.catalog import WEBHOOK_TEST
from domain.license_meta.codes import Code
from domain.platform.models import utcnow
from domain.platform.task_names import WEBHOOKS_DELIVER
from domain.signing.master_key import load_master_key
from domain.webhooks import endpoints, replay, ssrf, test_events
from domain.webhooks.audit_events import Actor
from domain.webhooks.models import DEFAULT_MAX_IN_FLIGHT, DELIVERY_STATUSES, MAX_IN_FLIGHT_LIMIT
from domain.webhooks.signatures import SignatureScheme

# Ids are BIGINT: anything outside 1..2^63-1 is a 422, never a database overflow.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]

router = APIRouter(prefix="/api/v1/webhook-endpoints", tags=["webhooks"])
T = TypeVar("T")


def api_error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    """Plain JSON ``{"detail": message}``, like FastAPI's own 422s."""
    return HTTPException(status_code=status, detail=message, headers=headers)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    return api_key or None


async def admin_actor(request: Request) -> Actor:
    state = request.app.state
    source_ip = request_client_ip(request)
    secret = _bearer(request)
    async with state.engine.connect() as conn:
        key = await load_api_key(conn, api_key_digest(secret)) if secret else None
        blocklist = await load_blocklist(conn)
    refusal = check_access(key, MANAGE_WEBHOOKS_CAPABILITY, parse_address(source_ip), None, blocklist, utcnow())
    challenge = {"WWW-Authenticate": "Bearer"}
    if refusal in (Code.INVALID_API_KEY, Code.INACTIVE_API_KEY):
        raise api_error(401, "a valid, active API key is required (Authorization: Bearer or X-API-Key)", challenge)
    if refusal is Code.MISSING_CAPABILITY:
        raise api_error(403, f"this API key lacks the {MANAGE_WEBHOOKS_CAPABILITY!r} capability")
    if refusal is not None:
        raise api_error(403, "this API key can't be used from this address")
    assert key is not None
    return Actor("api", api_key_id=key.id, source_ip=source_ip, request_id=request.scope["state"]["request_id"])


AdminActor = Annotated[Actor, Depends(admin_actor)]


async def in_transaction(work: Callable[..., T], *args: Any) -> T:
    """Run ``work(session, *args)`` in one transaction, off the event loop; domain errors become HTTP errors."""
    try:
        return await in_unit_of_work(work, *args)
    except replay.DeliveryNotFound as exc:
        raise api_error(404, str(exc)) from exc
    except endpoints.EndpointNotFound as exc:
        raise api_error(404, str(exc)) from exc
    except endpoints.DuplicateEndpoint as exc:
        raise api_error(409, str(exc)) from exc
    except endpoints.EndpointError as exc:
        raise api_error(422, str(exc)) from exc


def _allowed(request: Request) -> tuple[ssrf.Network, ...]:
    return ssrf.parse_allowed(request.app.state.settings.webhook_allowed_cidrs)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _ring(request: Request, delivery_ids: list[int], actor: Actor) -> None:
    doorbell = getattr(request.app.state, "doorbell", None)
    if doorbell is not None and delivery_ids:
        doorbell.ring(WEBHOOKS_DELIVER, delivery_ids, actor.request_id)


# An endpoint's share of each worker process: attempts at once, and attempts per second (null: no limit).
MaxInFlight = Annotated[int, Field(ge=1, le=MAX_IN_FLIGHT_LIMIT)]
RateLimit = Annotated[float, Field(gt=0, le=endpoints.MAX_RATE_LIMIT, allow_inf_nan=False)]


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=endpoints.MAX_URL_LENGTH)
    event_types: list[str] | None = Field(default=None, max_length=50)
    enabled: bool = True
    max_in_flight: MaxInFlight = DEFAULT_MAX_IN_FLIGHT
    rate_limit: RateLimit | None = None
    # v1: HMAC, the answer carries the whsec_ secret once; v1a: Ed25519, the view carries the whpk_ public key.
    signature_scheme: SignatureScheme = SignatureScheme.V1


def with_key(created: endpoints.WithSecret) -> dict[str, Any]:
    """The endpoint's view, plus its new ``whsec_`` secret (shown once) for a v1 endpoint; a v1a endpoint's
    ``whpk_`` public key is in the view already, and its private key is never shown."""
    shown = endpoints.view(created.endpoint)
    if created.endpoint.signature_scheme == SignatureScheme.V1:
        shown["secret"] = created.secret
    return shown


class EndpointPatch(BaseModel):
    """Absent fields stay as they are; ``"rate_limit": null`` removes the rate limit."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, max_length=endpoints.MAX_URL_LENGTH)
    event_types: list[str] | None = Field(default=None, max_length=50)
    enabled: bool | None = None
    max_in_flight: MaxInFlight | None = None
    rate_limit: RateLimit | None = None


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_seconds: float | None = Field(default=None, ge=0, le=30 * 86400)


class ReplaySinceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: dt.datetime
    until: dt.datetime | None = None


@router.get("")
async def list_endpoints(actor: AdminActor) -> dict[str, Any]:
    rows = await in_transaction(lambda s: [endpoints.view(r) for r in endpoints.list_endpoints(s)])
    return {"endpoints": rows}


@router.post("", status_code=201)
async def create_endpoint(body: EndpointIn, request: Request, actor: AdminActor) -> dict[str, Any]:
    master_key = load_master_key(request.app.state.settings)
    allowed = _allowed(request)

    def work(session: Any) -> dict[str, Any]:
        created = endpoints.create_endpoint(session, url=body.url, event_types=body.event_types,
                                            master_key=master_key, allowed=allowed, actor=actor,
                                            enabled=body.enabled, max_in_flight=body.max_in_flight,
                                            rate_limit=body.rate_limit, signature_scheme=body.signature_scheme)
        return with_key(created)

    return await in_transaction(work)


@router.get("/{endpoint_id}")
async def get_endpoint(endpoint_id: RowId, actor: AdminActor) -> dict[str, Any]:
    return await in_transaction(lambda s: endpoints.view(endpoints.get_endpoint(s, endpoint_id)))


@router.patch("/{endpoint_id}")
async def update_endpoint(endpoint_id: RowId, body: EndpointPatch, request: Request,
                          actor: AdminActor) -> dict[str, Any]:
    allowed = _allowed(request)

    def work(session: Any) -> dict[str, Any]:
        rate_limit = body.rate_limit if "rate_limit" in body.model_fields_set else endpoints.UNCHANGED
        row = endpoints.update_endpoint(session, endpoint_id, actor=actor, allowed=allowed, url=body.url,
                                        event_types=body.event_types, enabled=body.enabled,
                                        max_in_flight=body.max_in_flight, rate_limit=rate_limit)
        return endpoints.view(row)

    return await in_transaction(work)


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: RowId, actor: AdminActor) -> Response:
    await in_transaction(lambda s: endpoints.delete_endpoint(s, endpoint_id, actor))
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret")
async def rotate_secret(endpoint_id: RowId, request: Request, actor: AdminActor,
                        body: RotateIn | None = None) -> dict[str, Any]:
    settings = request.app.state.settings
    master_key = load_master_key(settings)
    overlap = settings.webhook_secret_overlap_seconds if body is None or body.overlap_seconds is None \
        else body.overlap_seconds

    def work(session: Any) -> dict[str, Any]:
        rotated = endpoints.rotate_secret(session, endpoint_id, master_key=master_key, overlap_seconds=overlap,
                                          actor=actor)
        return with_key(rotated)

    return await in_transaction(work)


@router.get("/{endpoint_id}/deliveries")
async def list_deliveries(endpoint_id: RowId, actor: AdminActor,
                          status: Annotated[str | None, Query(pattern="|".join(DELIVERY_STATUSES))] = None,
                          limit: Annotated[int, Query(ge=1, le=replay.MAX_LIST)] = 50,
                          before_id: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    rows = await in_transaction(lambda s: replay.list_deliveries(
        s, endpoint_id=endpoint_id, status=status, limit=limit, before_id=before_id))
    return {"deliveries": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay", status_code=202)
async def replay_delivery(endpoint_id: RowId, delivery_id: RowId, request: Request,
                          actor: AdminActor) -> dict[str, Any]:
    def work(session: Any) -> dict[str, Any]:
        row = replay.replay_delivery(session, delivery_id, actor, endpoint_id=endpoint_id)
        replay.mark_rung(session, [row.id])
        return replay.delivery_view(row)

    view = await in_transaction(work)
    _ring(request, [view["id"]], actor)
    return view


@router.post("/{endpoint_id}/replay", status_code=202)
async def replay_since(endpoint_id: RowId, body: ReplaySinceIn, request: Request, actor: AdminActor) -> dict[str, Any]:
    def work(session: Any) -> list[int]:
        ids = replay.replay_since(session, _utc(body.since), actor,
                                  until=_utc(body.until) if body.until else None, endpoint_id=endpoint_id)
        replay.mark_rung(session, ids)
        return ids

    ids = await in_transaction(work)
    _ring(request, ids, actor)
    return {"replayed": ids, "count": len(ids)}


@router.post("/{endpoint_id}/test", status_code=202)
async def send_test_event(endpoint_id: RowId, request: Request, actor: AdminActor) -> dict[str, Any]:
    """Queue a ``webhook.test`` delivery to this endpoint only; a webhooks worker sends it."""
    def work(session: Any) -> dict[str, Any]:
        sent = test_events.send_test_event(session, endpoint_id, actor)
        replay.mark_rung(session, [sent.delivery_id])
        return {"delivery_id": sent.delivery_id, "msg_id": sent.msg_id, "event_type": WEBHOOK_TEST}

    queued = await in_transaction(work)
    _ring(request, [queued["delivery_id"]], actor)
    return queued
