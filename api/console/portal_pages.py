"""The consumer portal: one webhook endpoint's deliveries, attempts, replay, secret rotation and the event
catalog, reached by a signed, expiring link. Every request opens the link again and scopes each query by its
endpoint id; no id taken from the URL or a form can widen that scope.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from api.client_ip import request_client_ip
from api.console.operator_pages import PAGE_SIZE, RowId, queue_and_ring
from api.console.web import PageError, in_transaction, master_key, now, redirect, render
from domain.console import portal, queries
from domain.events.catalog import catalog_document
from domain.webhooks import endpoints, replay, test_events
from domain.webhooks.audit_events import Actor
from domain.webhooks.states import DeliveryStatus

router = APIRouter(prefix="/console/portal", include_in_schema=False)
Token = Annotated[str, Path(max_length=512)]


def _scope(request: Request, token: str) -> int:
    try:
        return portal.open_link(master_key(request), token, now(request))
    except portal.PortalLinkInvalid as exc:
        raise PageError(403, str(exc)) from exc


def _page(request: Request, token: str, template: str, **context: Any) -> Response:
    return render(template, signed_in=False, portal_base=f"/console/portal/{token}",
                  csrf=portal.form_token(master_key(request), token), **context)


async def _checked_form(request: Request, token: str) -> None:
    form = await request.form()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, portal.form_token(master_key(request), token)):
        raise PageError(403, "This form was not sent from this portal page. Reload it and try again.")


async def _posted(request: Request, token: str) -> tuple[int, Actor]:
    """An action form of the portal: the link's endpoint and who acts, once the form's CSRF token checks out."""
    endpoint_id = _scope(request, token)
    await _checked_form(request, token)
    actor = portal.portal_actor(endpoint_id, request_client_ip(request),
                                request.scope.get("state", {}).get("request_id"))
    return endpoint_id, actor


@router.get("/{token}")
async def portal_home(token: Token, request: Request,
                      status: Annotated[DeliveryStatus | None, Query()] = None,
                      before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> Response:
    endpoint_id = _scope(request, token)

    def work(session: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        row = endpoints.view(endpoints.get_endpoint(session, endpoint_id))
        return row, replay.list_deliveries(session, endpoint_id=endpoint_id, status=status, limit=PAGE_SIZE,
                                           before_id=before_id, with_attempts=False)

    row, rows = await in_transaction(work)
    next_before = rows[-1]["id"] if len(rows) == PAGE_SIZE else None
    return _page(request, token, "portal.html", endpoint=row, deliveries=rows, next_before=next_before,
                 status=status, statuses=list(DeliveryStatus))


@router.get("/{token}/deliveries/{delivery_id}")
async def portal_delivery(token: Token, delivery_id: RowId, request: Request) -> Response:
    endpoint_id = _scope(request, token)
    row = await in_transaction(lambda s: queries.delivery_detail(s, delivery_id, endpoint_id=endpoint_id))
    base = f"/console/portal/{token}"
    return _page(request, token, "delivery.html", delivery=row, back_url=base,
                 replay_url=f"{base}/deliveries/{delivery_id}/replay")


@router.post("/{token}/deliveries/{delivery_id}/replay")
async def portal_replay(token: Token, delivery_id: RowId, request: Request) -> Response:
    endpoint_id, actor = await _posted(request, token)

    await queue_and_ring(
        request, lambda session: replay.replay_delivery(session, delivery_id, actor, endpoint_id=endpoint_id).id,
        actor.request_id)
    return redirect(f"/console/portal/{token}/deliveries/{delivery_id}")


@router.post("/{token}/test")
async def portal_send_test(token: Token, request: Request) -> Response:
    """A ``webhook.test`` delivery to the link's endpoint: the endpoint comes from the token, never the form."""
    endpoint_id, actor = await _posted(request, token)

    delivery_id = await queue_and_ring(
        request, lambda session: test_events.send_test_event(session, endpoint_id, actor).delivery_id,
        actor.request_id)
    return redirect(f"/console/portal/{token}/deliveries/{delivery_id}")


@router.post("/{token}/rotate-secret")
async def portal_rotate_secret(token: Token, request: Request) -> Response:
    """The link's endpoint gets a new secret, shown in this answer only; the old one signs on for the overlap."""
    endpoint_id, actor = await _posted(request, token)
    key = master_key(request)
    overlap = request.app.state.settings.webhook_secret_overlap_seconds

    def work(session: Any) -> tuple[dict[str, Any], str]:
        rotated = endpoints.rotate_secret(session, endpoint_id, master_key=key, overlap_seconds=overlap, actor=actor)
        return endpoints.view(rotated.endpoint), rotated.secret

    row, secret = await in_transaction(work)
    return _page(request, token, "portal_secret.html", endpoint=row, secret=secret, overlap_seconds=overlap)


@router.get("/{token}/event-types")
async def portal_event_types(token: Token, request: Request) -> Response:
    _scope(request, token)
    return _page(request, token, "event_types.html", event_types=_CATALOG)


_CATALOG = [{**entry, "example_text": json.dumps(entry["example"], indent=2)}
            for entry in catalog_document()["event_types"]]
