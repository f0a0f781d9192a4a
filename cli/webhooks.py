"""``keymeta webhooks``: endpoints (the ``whsec_`` secret is printed once; a v1a endpoint's ``whpk_`` public key
whenever asked), key rotation, replay, log."""

from __future__ import annotations

from typing import Any

import click

from cli import main
from cli.portal import portal_link
from cli.setup import master_key_or_fail
from cli.support import CliError, json_option, parse_time
from cli.webhook_test import webhook_test
from domain.events.outbox import WEBHOOK_EVENT_TYPES
from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings
from domain.signing.master_key import MasterKeyError
from domain.webhooks import endpoints, replay, ssrf
from domain.webhooks.audit_events import CLI
from domain.webhooks.models import DEFAULT_MAX_IN_FLIGHT, DELIVERY_STATUSES, MAX_IN_FLIGHT_LIMIT
from domain.webhooks.signatures import SignatureScheme

QUEUED_NOTE = "queued; the delivery sweeper sends it within seconds (a running beat and webhooks worker needed)"


def _allowed() -> tuple[ssrf.Network, ...]:
    return ssrf.parse_allowed(get_settings().webhook_allowed_cidrs)


@main.group()
def webhooks() -> None:
    """Webhook endpoints (Standard Webhooks), their secrets, and the delivery log."""


webhooks.add_command(portal_link)
webhooks.add_command(webhook_test)


MAX_IN_FLIGHT_HELP = f"Attempts at once per worker process (1–{MAX_IN_FLIGHT_LIMIT}; default {DEFAULT_MAX_IN_FLIGHT})."
RATE_LIMIT_HELP = "Attempts per second at most (default: no limit)."
SECRET_NOTE = "the secret is shown once; store it now"  # noqa: S105 - a sentence
PUBLIC_KEY_NOTE = "verify v1a signatures with this public key; `keymeta webhooks list` shows it again"


def _with_key(created: endpoints.WithSecret, secret_note: str) -> dict[str, Any]:
    """The endpoint, plus its new whsec_ secret (v1, shown once); a v1a endpoint shows only its public key."""
    shown = endpoints.view(created.endpoint)
    if created.endpoint.signature_scheme == SignatureScheme.V1:
        return {**shown, "secret": created.secret, "note": secret_note}
    return {**shown, "note": PUBLIC_KEY_NOTE}


@webhooks.command("create")
@click.option("--url", required=True, help="https://… (plain http only to KEYMETA_WEBHOOK_ALLOWED_CIDRS).")
@click.option("--event", "events", multiple=True,
              help=f"Repeatable; default all. Known: {', '.join(sorted(WEBHOOK_EVENT_TYPES))}.")
@click.option("--max-in-flight", type=int, default=None, help=MAX_IN_FLIGHT_HELP)
@click.option("--rate-limit", type=float, default=None, help=RATE_LIMIT_HELP)
@click.option("--signature-scheme", type=click.Choice([s.value for s in SignatureScheme]),
              default=SignatureScheme.V1.value, show_default=True,
              help="v1: HMAC with a whsec_ secret printed once; v1a: Ed25519, the consumer verifies with the "
                   "whpk_ public key printed (the private key never leaves keymeta).")
@json_option
def webhooks_create(url: str, events: tuple[str, ...], max_in_flight: int | None,
                    rate_limit: float | None, signature_scheme: str) -> dict[str, Any]:
    master_key = master_key_or_fail()
    try:
        with unit_of_work() as session:
            created = endpoints.create_endpoint(session, url=url, event_types=list(events), master_key=master_key,
                                                allowed=_allowed(), actor=CLI, max_in_flight=max_in_flight,
                                                rate_limit=rate_limit, signature_scheme=signature_scheme)
            return _with_key(created, SECRET_NOTE)
    except endpoints.EndpointError as exc:
        raise CliError(str(exc)) from exc


@webhooks.command("list")
@json_option
def webhooks_list() -> dict[str, Any]:
    with unit_of_work() as session:
        rows = endpoints.list_endpoints(session)
        return {"endpoints": [endpoints.view(row) for row in rows]}


def _set_enabled(endpoint_id: int, enabled: bool) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            return endpoints.view(endpoints.set_enabled(session, endpoint_id, enabled, CLI))
    except endpoints.EndpointError as exc:
        raise CliError(str(exc)) from exc


@webhooks.command("disable")
@click.argument("endpoint_id", type=int)
@json_option
def webhooks_disable(endpoint_id: int) -> dict[str, Any]:
    return _set_enabled(endpoint_id, False)


@webhooks.command("enable")
@click.argument("endpoint_id", type=int)
@json_option
def webhooks_enable(endpoint_id: int) -> dict[str, Any]:
    return _set_enabled(endpoint_id, True)


@webhooks.command("limit")
@click.argument("endpoint_id", type=int)
@click.option("--max-in-flight", type=int, default=None, help=MAX_IN_FLIGHT_HELP)
@click.option("--rate-limit", type=float, default=None, help=RATE_LIMIT_HELP)
@click.option("--no-rate-limit", is_flag=True, help="Remove the rate limit.")
@json_option
def webhooks_limit(endpoint_id: int, max_in_flight: int | None, rate_limit: float | None,
                   no_rate_limit: bool) -> dict[str, Any]:
    """Set an endpoint's share of each worker: attempts at once and attempts per second."""
    if rate_limit is not None and no_rate_limit:
        raise CliError("give --rate-limit R or --no-rate-limit, not both")
    rate: float | endpoints.Unchanged | None = None if no_rate_limit else (
        endpoints.UNCHANGED if rate_limit is None else rate_limit)
    try:
        with unit_of_work() as session:
            return endpoints.view(endpoints.update_endpoint(session, endpoint_id, actor=CLI, allowed=_allowed(),
                                                            max_in_flight=max_in_flight, rate_limit=rate))
    except endpoints.EndpointError as exc:
        raise CliError(str(exc)) from exc


@webhooks.command("rotate-secret")
@click.argument("endpoint_id", type=int)
@click.option("--overlap", "overlap_seconds", type=click.FloatRange(min=0), default=None,
              help="Seconds the old secret keeps signing too (default KEYMETA_WEBHOOK_SECRET_OVERLAP_SECONDS).")
@json_option
def webhooks_rotate_secret(endpoint_id: int, overlap_seconds: float | None) -> dict[str, Any]:
    master_key = master_key_or_fail()
    overlap = get_settings().webhook_secret_overlap_seconds if overlap_seconds is None else overlap_seconds
    try:
        with unit_of_work() as session:
            rotated = endpoints.rotate_secret(session, endpoint_id, master_key=master_key, overlap_seconds=overlap,
                                              actor=CLI)
            row = rotated.endpoint
            shown: dict[str, Any] = {"id": row.id, "secret_version": row.secret_version,
                                     "previous_secret_expires_at": row.previous_secret_expires_at}
            if row.signature_scheme == SignatureScheme.V1:
                return {**shown, "secret": rotated.secret,
                        "note": "the secret is shown once; both secrets sign until the previous one expires"}
            return {**shown, "public_key": row.public_key, "previous_public_key": row.previous_public_key,
                    "note": "both keys sign until the previous one expires: give consumers the new public key"}
    except (endpoints.EndpointError, MasterKeyError) as exc:
        raise CliError(str(exc)) from exc


@webhooks.command("replay")
@click.option("--delivery", "delivery_id", type=int, default=None, help="Send this delivery again.")
@click.option("--since", default=None, help="Re-queue finished deliveries created since (ISO 8601 or Unix s).")
@click.option("--until", default=None, help="With --since: created before this time.")
@click.option("--endpoint", "endpoint_id", type=int, default=None, help="With --since: only this endpoint.")
@json_option
def webhooks_replay(delivery_id: int | None, since: str | None, until: str | None,
                    endpoint_id: int | None) -> dict[str, Any]:
    if (delivery_id is None) == (since is None):
        raise CliError("give exactly one of --delivery ID or --since T")
    if delivery_id is not None and (until is not None or endpoint_id is not None):
        raise CliError("--until and --endpoint go with --since")
    try:
        with unit_of_work() as session:
            if delivery_id is not None:
                row = replay.replay_delivery(session, delivery_id, CLI)
                return {"replayed": [row.id], "msg_id": row.msg_id, "status": row.status, "note": QUEUED_NOTE}
            assert since is not None
            ids = replay.replay_since(session, parse_time(since), CLI, until=parse_time(until) if until else None,
                                      endpoint_id=endpoint_id)
            return {"replayed": ids, "count": len(ids), "note": QUEUED_NOTE}
    except endpoints.EndpointError as exc:
        raise CliError(str(exc)) from exc


@webhooks.command("deliveries")
@click.option("--endpoint", "endpoint_id", type=int, default=None)
@click.option("--status", type=click.Choice(DELIVERY_STATUSES), default=None)
@click.option("--limit", type=click.IntRange(1, replay.MAX_LIST), default=20, show_default=True)
@click.option("--attempts", "with_attempts", is_flag=True, help="Include every attempt.")
@json_option
def webhooks_deliveries(endpoint_id: int | None, status: str | None, limit: int,
                        with_attempts: bool) -> dict[str, Any]:
    """The delivery log, newest first."""
    try:
        with unit_of_work() as session:
            return {"deliveries": replay.list_deliveries(session, endpoint_id=endpoint_id, status=status, limit=limit,
                                                         with_attempts=with_attempts)}
    except endpoints.EndpointError as exc:
        raise CliError(str(exc)) from exc
