"""The operator console's pages: overview, webhook endpoints, deliveries and their attempts, the audit log.

Reads are GET pages that work without JavaScript; every change is a POST form with the session's CSRF token,
done by the same domain services as the CLI and the admin API, and audited as ``console:<api key id>``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from api.console import guard
from api.console.guard import SignedIn
from api.console.web import PageError, in_transaction, master_key, now, redirect, render
from api.metrics import attempt_tally
from domain.access.checks import api_key_digest
from domain.console import portal, queries, sessions
from domain.events import audit, metrics_queries
from domain.events.outbox import WEBHOOK_EVENT_TYPES
from domain.platform.database import CONNECTION_FAILURES
from domain.platform.task_names import WEBHOOKS_DELIVER
from domain.webhooks import audit_events, endpoints, replay, ssrf, test_events
from domain.webhooks.signatures import SignatureScheme
from domain.webhooks.states import DeliveryStatus

RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
PAGE_SIZE = 50

router = APIRouter(prefix="/console", include_in_schema=False)


def page(request: Request, who: guard.Operator, template: str, status: int = 200, **context: Any) -> Response:
    response = render(template, status, signed_in=True, csrf=who.csrf, operator_id=who.session.api_key_id,
                      **context)
    return guard.keep_session(request, response, who)


def _back(request: Request, who: guard.Operator, url: str) -> Response:
    return guard.keep_session(request, redirect(url), who)


def _allowed(request: Request) -> tuple[ssrf.Network, ...]:
    return ssrf.parse_allowed(request.app.state.settings.webhook_allowed_cidrs)


# --- sign-in ---------------------------------------------------------------------------------------------

SIGN_IN_REASONS = {
    "expired": "Your session has expired. Sign in again.",
    "key-refused": "The API key of your session can no longer use the console.",
    "signed-out": "Sign in with an API key that has the console capability.",
}


def _sign_inpage(request: Request, message: str, status: int = 200) -> Response:
    nonce = guard.sign_in_nonce()
    response = render("sign_in.html", status, signed_in=False, message=message,
                      csrf=guard.sign_in_csrf(request, nonce))
    guard.set_cookie(request, response, guard.SIGN_IN_COOKIE, nonce, path=guard.SIGN_IN_PATH)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request, reason: str = "signed-out") -> Response:
    return _sign_inpage(request, SIGN_IN_REASONS.get(reason, SIGN_IN_REASONS["signed-out"]))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await request.form()
    if not guard.sign_in_csrf_valid(request, form.get("csrf")):
        return _sign_inpage(request, "The sign-in form expired. Try again.", 403)
    secret = form.get("api_key")
    secret = secret.strip() if isinstance(secret, str) else ""
    refusal, key_id = await guard.key_refusal(request, None, api_key_digest(secret)) if secret else (None, None)
    if not secret or refusal is not None or key_id is None:
        return _sign_inpage(request, "This API key cannot sign in to the console.", 401)
    session = sessions.start(key_id, now(request))
    actor = guard.actor_of(request, key_id)
    await in_transaction(lambda s: audit_events.record(s, sessions.SIGNED_IN, actor, key_id, {}))
    key = sessions.session_key(master_key(request))
    response = redirect("/console")
    guard.set_cookie(request, response, guard.SESSION_COOKIE, sessions.encode(key, session))
    response.delete_cookie(guard.SIGN_IN_COOKIE, path=guard.SIGN_IN_PATH)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, who: SignedIn) -> Response:
    await guard.checked_form(request, who)
    await in_transaction(lambda s: audit_events.record(s, sessions.SIGNED_OUT, who.actor,
                                                       who.session.api_key_id, {}))
    response = redirect(guard.SIGN_IN_PATH)
    response.delete_cookie(guard.SESSION_COOKIE, path=guard.COOKIE_PATH)
    return response


# --- overview --------------------------------------------------------------------------------------------

@router.get("")
async def overview(request: Request, who: SignedIn) -> Response:
    try:
        async with request.app.state.engine.connect() as conn:
            figures = await metrics_queries.backlog(conn, now(request), attempt_tally(request))
    except CONNECTION_FAILURES as exc:
        raise PageError(503, "The database cannot be reached right now. Try again in a moment.") from exc
    return page(request, who, "overview.html", figures=figures)


# --- webhook endpoints -----------------------------------------------------------------------------------

def _endpoint_form(**values: Any) -> dict[str, Any]:
    return {"event_types": sorted(WEBHOOK_EVENT_TYPES), "signature_schemes": list(SignatureScheme),
            "form": {"url": "", "events": [], "scheme": SignatureScheme.V1.value, **values}}


@router.get("/endpoints")
async def endpoint_list(request: Request, who: SignedIn) -> Response:
    rows = await in_transaction(lambda s: [endpoints.view(r) for r in endpoints.list_endpoints(s)])
    return page(request, who, "endpoints.html", endpoints=rows, error=None, **_endpoint_form())


@router.post("/endpoints")
async def endpoint_create(request: Request, who: SignedIn) -> Response:
    form = await guard.checked_form(request, who)
    url = str(form.get("url") or "")
    events = [str(e) for e in form.getlist("events")]
    scheme = str(form.get("scheme") or SignatureScheme.V1.value)
    key, allowed = master_key(request), _allowed(request)
    try:
        created = await in_transaction(lambda s: _created(s, url, events, scheme, key, allowed, who))
    except PageError as exc:
        if exc.status != 422:
            raise
        rows = await in_transaction(lambda s: [endpoints.view(r) for r in endpoints.list_endpoints(s)])
        return page(request, who, "endpoints.html", 422, endpoints=rows, error=exc.message,
                     **_endpoint_form(url=url, events=events, scheme=scheme))
    # The secret appears in this one answer only (no-store); no page ever renders it again.
    return page(request, who, "secret.html", endpoint=created[0], secret=created[1], rotated=False)


def _created(session: Any, url: str, events: list[str], scheme: str, key: bytes,
             allowed: tuple[ssrf.Network, ...], who: guard.Operator) -> tuple[dict[str, Any], str]:
    made = endpoints.create_endpoint(session, url=url, event_types=events, master_key=key, allowed=allowed,
                                     actor=who.actor, signature_scheme=scheme)
    return endpoints.view(made.endpoint), made.secret


@router.get("/endpoints/{endpoint_id}")
async def endpoint_detail(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    row = await in_transaction(lambda s: endpoints.view(endpoints.get_endpoint(s, endpoint_id)))
    return page(request, who, "endpoint.html", endpoint=row, link=None, confirm_delete=False,
                event_types=sorted(WEBHOOK_EVENT_TYPES))


@router.post("/endpoints/{endpoint_id}/enabled")
async def endpoint_set_enabled(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    form = await guard.checked_form(request, who)
    enabled = form.get("enabled") == "true"
    await in_transaction(lambda s: endpoints.set_enabled(s, endpoint_id, enabled, who.actor))
    return _back(request, who, f"/console/endpoints/{endpoint_id}")


@router.post("/endpoints/{endpoint_id}/rotate-secret")
async def endpoint_rotate(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    await guard.checked_form(request, who)
    key = master_key(request)
    overlap = request.app.state.settings.webhook_secret_overlap_seconds

    def work(session: Any) -> tuple[dict[str, Any], str]:
        rotated = endpoints.rotate_secret(session, endpoint_id, master_key=key, overlap_seconds=overlap,
                                          actor=who.actor)
        return endpoints.view(rotated.endpoint), rotated.secret

    row, secret = await in_transaction(work)
    return page(request, who, "secret.html", endpoint=row, secret=secret, rotated=True)


@router.post("/endpoints/{endpoint_id}/portal-link")
async def endpoint_portal_link(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    form = await guard.checked_form(request, who)
    try:
        ttl = float(str(form.get("ttl_hours") or "1")) * 3600
    except ValueError as exc:
        raise PageError(422, "The link's lifetime must be a number of hours.") from exc
    key, at = master_key(request), now(request)

    def work(session: Any) -> tuple[portal.PortalLink, dict[str, Any]]:
        link = portal.issue_link(session, key, endpoint_id, ttl_seconds=ttl, actor=who.actor, now=at)
        return link, endpoints.view(endpoints.get_endpoint(session, endpoint_id))

    link, row = await in_transaction(work)
    base = request.app.state.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return page(request, who, "endpoint.html", endpoint=row, confirm_delete=False,
                event_types=sorted(WEBHOOK_EVENT_TYPES), link={"url": base + link.path, "expires_at": link.expires_at})


@router.post("/endpoints/{endpoint_id}/edit")
async def endpoint_edit(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    """A new URL and event selection (none ticked: every event), by the same rules as a new endpoint."""
    form = await guard.checked_form(request, who)
    url = str(form.get("url") or "")
    events = [str(e) for e in form.getlist("events")]
    allowed = _allowed(request)
    await in_transaction(lambda s: endpoints.update_endpoint(s, endpoint_id, actor=who.actor, allowed=allowed,
                                                             url=url, event_types=events))
    return _back(request, who, f"/console/endpoints/{endpoint_id}")


@router.post("/endpoints/{endpoint_id}/delete")
async def endpoint_delete(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    """Without ``confirm=<the id>`` this only asks; with it, the endpoint and its deliveries are deleted."""
    form = await guard.checked_form(request, who)
    if form.get("confirm") != str(endpoint_id):
        row = await in_transaction(lambda s: endpoints.view(endpoints.get_endpoint(s, endpoint_id)))
        return page(request, who, "endpoint.html", endpoint=row, link=None, confirm_delete=True,
                    event_types=sorted(WEBHOOK_EVENT_TYPES))
    await in_transaction(lambda s: endpoints.delete_endpoint(s, endpoint_id, who.actor))
    return _back(request, who, "/console/endpoints")


@router.post("/endpoints/{endpoint_id}/test")
async def endpoint_send_test(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    """Queue a ``webhook.test`` delivery to this endpoint alone and show it (a worker sends it)."""
    await guard.checked_form(request, who)

    delivery_id = await queue_and_ring(
        request, lambda session: test_events.send_test_event(session, endpoint_id, who.actor).delivery_id,
        who.actor.request_id)
    return _back(request, who, f"/console/deliveries/{delivery_id}")


@router.post("/endpoints/{endpoint_id}/replay")
async def endpoint_replay_since(endpoint_id: RowId, request: Request, who: SignedIn) -> Response:
    """Re-queue the endpoint's finished deliveries created since a time (UTC)."""
    form = await guard.checked_form(request, who)
    try:
        since = dt.datetime.fromisoformat(str(form.get("since") or ""))
    except ValueError as exc:
        raise PageError(422, "Give the start of the range as a date and time (UTC).") from exc
    since = since.replace(tzinfo=dt.UTC) if since.tzinfo is None else since.astimezone(dt.UTC)

    def work(session: Any) -> list[int]:
        ids = replay.replay_since(session, since, who.actor, endpoint_id=endpoint_id)
        replay.mark_rung(session, ids)
        return ids

    ids = await in_transaction(work)
    ring(request, ids, who.actor.request_id)
    return _back(request, who, f"/console/deliveries?endpoint_id={endpoint_id}")


# --- deliveries ------------------------------------------------------------------------------------------

@router.get("/deliveries")
async def delivery_list(request: Request, who: SignedIn,
                        endpoint_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                        status: Annotated[DeliveryStatus | None, Query()] = None,
                        before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> Response:
    rows = await in_transaction(lambda s: replay.list_deliveries(
        s, endpoint_id=endpoint_id, status=status, limit=PAGE_SIZE, before_id=before_id, with_attempts=False))
    next_before = rows[-1]["id"] if len(rows) == PAGE_SIZE else None
    return page(request, who, "deliveries.html", deliveries=rows, next_before=next_before,
                 filters={"endpoint_id": endpoint_id, "status": status}, statuses=list(DeliveryStatus))


@router.get("/deliveries/{delivery_id}")
async def delivery_detail(delivery_id: RowId, request: Request, who: SignedIn) -> Response:
    row = await in_transaction(lambda s: queries.delivery_detail(s, delivery_id))
    return page(request, who, "delivery.html", delivery=row, replay_url=f"/console/deliveries/{delivery_id}/replay",
                 back_url=f"/console/deliveries?endpoint_id={row['endpoint_id']}")


@router.post("/deliveries/{delivery_id}/replay")
async def delivery_replay(delivery_id: RowId, request: Request, who: SignedIn) -> Response:
    await guard.checked_form(request, who)

    await queue_and_ring(request, lambda session: replay.replay_delivery(session, delivery_id, who.actor).id,
                         who.actor.request_id)
    return _back(request, who, f"/console/deliveries/{delivery_id}")


async def queue_and_ring(request: Request, queue: Callable[[Session], int], request_id: str | None) -> int:
    """``queue`` adds one delivery and returns its id; it is committed marked rung, then rung."""
    def work(session: Session) -> int:
        delivery_id = queue(session)
        replay.mark_rung(session, [delivery_id])
        return delivery_id

    delivery_id = await in_transaction(work)
    ring(request, [delivery_id], request_id)
    return delivery_id


def ring(request: Request, delivery_ids: list[int], request_id: str | None) -> None:
    """After commit, best effort: the sweeper sends what a lost ring leaves behind."""
    doorbell = getattr(request.app.state, "doorbell", None)
    if doorbell is not None and delivery_ids:
        doorbell.ring(WEBHOOKS_DELIVER, delivery_ids, request_id)


# --- audit log -------------------------------------------------------------------------------------------

@router.get("/audit")
async def audit_log(request: Request, who: SignedIn,
                    before_seq: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                    action: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    rows = await in_transaction(lambda s: queries.audit_page(s, before_seq=before_seq, action=action or None,
                                                             limit=PAGE_SIZE))
    next_before = rows[-1].seq if len(rows) == PAGE_SIZE else None
    return page(request, who, "audit.html", records=rows, next_before=next_before, action=action or "",
                 verified=None)


@router.post("/audit/verify")
async def audit_verify(request: Request, who: SignedIn) -> Response:
    await guard.checked_form(request, who)
    checked, broken = await in_transaction(audit.verify_chain)
    rows = await in_transaction(lambda s: queries.audit_page(s, limit=PAGE_SIZE))
    next_before = rows[-1].seq if len(rows) == PAGE_SIZE else None
    return page(request, who, "audit.html", records=rows, next_before=next_before, action="",
                 verified={"checked": checked, "broken": broken, "at": now(request)})
