"""Webhook endpoints: registration rules, sealed signing keys, rotation with overlap, enable/disable.

An endpoint signs with ``v1`` (a ``whsec_`` secret shared with its consumer) or ``v1a`` (a ``whsk_`` Ed25519
private key that never leaves the service; its ``whpk_`` public key is published in the endpoint's view).

Services only flush; the caller (CLI command, HTTP request) owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.events.outbox import WEBHOOK_EVENT_TYPES
from domain.platform.models import utcnow
from domain.signing.master_key import seal, unseal
from domain.webhooks import audit_events, ssrf
from domain.webhooks.audit_events import Actor
from domain.webhooks.models import DEFAULT_MAX_IN_FLIGHT, MAX_IN_FLIGHT_LIMIT, WebhookEndpoint
from domain.webhooks.signatures import SecretError, SignatureScheme, generate_key, public_key, scheme_of

ALL_EVENTS = "*"
MAX_RATE_LIMIT = 10_000.0  # attempts per second: above this a limit means nothing
MAX_URL_LENGTH = 2048
REGISTRATION_RESOLVE_TIMEOUT = 5.0
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?", re.IGNORECASE)


class EndpointError(ValueError):
    """Refused input (HTTP 422, CLI error)."""


class DuplicateEndpoint(EndpointError):
    """The same URL with the same event types is already registered (HTTP 409)."""


class EndpointNotFound(EndpointError):
    """HTTP 404."""


def normalize_event_types(event_types: list[str] | None) -> list[str]:
    """Sorted known types; none given (or "*") means every webhook event type, now and later."""
    cleaned = sorted({t.strip() for t in event_types or [] if t.strip()})
    if not cleaned or ALL_EVENTS in cleaned:
        return [ALL_EVENTS]
    unknown = [t for t in cleaned if t not in WEBHOOK_EVENT_TYPES]
    if unknown:
        known = ", ".join(sorted(WEBHOOK_EVENT_TYPES))
        raise EndpointError(f"unknown event type {unknown[0]!r} (known: {known}, or {ALL_EVENTS} for all)")
    return cleaned


def subscribes(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return ALL_EVENTS in endpoint.event_types or event_type in endpoint.event_types


def validate_url(url: str, allowed: tuple[ssrf.Network, ...]) -> str:
    """The normalised URL, or EndpointError saying what is wrong with it.

    A literal IP host is checked against the SSRF rules now; a host name only when plain http needs an
    allow-listed address. Every send checks the resolved address again (``ssrf.vet``).
    """
    text = url.strip()
    if not text:
        raise EndpointError("the URL must not be empty")
    if len(text) > MAX_URL_LENGTH:
        raise EndpointError(f"the URL must be at most {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise EndpointError(f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise EndpointError("the URL must start with https:// (or http:// for an allow-listed address)")
    if not parsed.host:
        raise EndpointError("the URL has no host")
    literal = ssrf.literal_address(parsed.host)
    if literal is None and not _HOSTNAME.fullmatch(parsed.raw_host.decode("ascii", errors="replace")):
        raise EndpointError(f"invalid host name {parsed.host!r}")
    if parsed.userinfo:
        raise EndpointError("credentials in the URL are not supported; verify the webhook signature instead")
    if parsed.fragment:
        raise EndpointError("the URL must not have a #fragment")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise EndpointError(f"invalid URL: port {parsed.port} is out of range")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if literal is not None or parsed.scheme == "http":
        try:
            ssrf.vet(parsed.scheme, parsed.host, port, allowed, REGISTRATION_RESOLVE_TIMEOUT)
        except ssrf.AddressRefused as exc:
            raise EndpointError(str(exc)) from exc
    return str(parsed)


def check_share(max_in_flight: int | None, rate_limit: float | None) -> None:
    """An endpoint's share of a worker: 1..MAX_IN_FLIGHT_LIMIT attempts at once, a positive rate (or none)."""
    if max_in_flight is not None and not 1 <= max_in_flight <= MAX_IN_FLIGHT_LIMIT:
        raise EndpointError(f"max_in_flight must be between 1 and {MAX_IN_FLIGHT_LIMIT}")
    if rate_limit is not None and not (math.isfinite(rate_limit) and 0 < rate_limit <= MAX_RATE_LIMIT):
        raise EndpointError(f"rate_limit must be more than 0 and at most {MAX_RATE_LIMIT:g} per second")


def fingerprint(url: str, event_types: list[str]) -> str:
    return hashlib.sha256(f"{url}\n{','.join(event_types)}".encode()).hexdigest()


def secret_context(endpoint_id: int, version: int) -> str:
    return f"webhook:{endpoint_id}:{version}"


def get_endpoint(session: Session, endpoint_id: int, *, for_update: bool = False) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).first()
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint with id {endpoint_id}")
    return row


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def view(row: WebhookEndpoint, now: dt.datetime | None = None) -> dict[str, Any]:
    """What operators see: never a secret or private key; the public keys of a v1a endpoint (the previous one
    only while it still signs too)."""
    expires = row.previous_secret_expires_at
    previous_public_key = row.previous_public_key if expires is not None and expires > (now or utcnow()) else None
    return {"id": row.id, "url": row.url, "event_types": list(row.event_types), "enabled": row.enabled,
            "disabled_reason": row.disabled_reason, "disabled_at": row.disabled_at,
            "failing_since": row.failing_since, "signature_scheme": row.signature_scheme,
            "public_key": row.public_key, "previous_public_key": previous_public_key,
            "secret_version": row.secret_version, "previous_secret_expires_at": row.previous_secret_expires_at,
            "max_in_flight": row.max_in_flight, "rate_limit": row.rate_limit,
            "created_at": row.created_at, "updated_at": row.updated_at}


def _check_unique(session: Session, print_: str, exclude_id: int | None = None) -> None:
    existing = session.scalar(select(WebhookEndpoint.id).where(WebhookEndpoint.fingerprint == print_))
    if existing is not None and existing != exclude_id:
        raise DuplicateEndpoint(f"endpoint {existing} already has this URL and these event types")


def _flush_unique(session: Session, print_: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # a concurrent registration won the race
        raise DuplicateEndpoint("an endpoint with this URL and these event types was just registered") from exc


@dataclass(frozen=True)
class WithSecret:
    """An endpoint and what its consumer verifies with: the ``whsec_`` secret (v1, shown once) or the ``whpk_``
    public key (v1a; the private key is never shown)."""

    endpoint: WebhookEndpoint
    secret: str


def _new_key(row: WebhookEndpoint) -> str:
    """A new key of the endpoint's scheme, its public key (v1a) already on the row."""
    key = generate_key(row.signature_scheme)
    row.public_key = public_key(key) if row.signature_scheme == SignatureScheme.V1A else None
    return key


def _seal(row: WebhookEndpoint, key: str, master_key: bytes) -> str:
    """Seal ``key`` as the row's ``secret_version`` (the context needs the row's id); returns what the consumer
    verifies with: the secret itself (v1) or the public key (v1a)."""
    row.secret_encrypted = seal(master_key, key.encode(), secret_context(row.id, row.secret_version))
    return row.public_key or key


def parse_scheme(value: str | None) -> SignatureScheme:
    if value is None:
        return SignatureScheme.V1
    try:
        return SignatureScheme(value)
    except ValueError as exc:
        known = ", ".join(SignatureScheme)
        raise EndpointError(f"unknown signature scheme {value!r} (known: {known})") from exc


def create_endpoint(session: Session, *, url: str, event_types: list[str] | None, master_key: bytes,
                    allowed: tuple[ssrf.Network, ...], actor: Actor, enabled: bool = True,
                    max_in_flight: int | None = None, rate_limit: float | None = None,
                    signature_scheme: SignatureScheme | str | None = None) -> WithSecret:
    scheme = parse_scheme(signature_scheme)
    clean_url = validate_url(url, allowed)
    types = normalize_event_types(event_types)
    check_share(max_in_flight, rate_limit)
    print_ = fingerprint(clean_url, types)
    _check_unique(session, print_)
    now = utcnow()
    row = WebhookEndpoint(url=clean_url, event_types=types, fingerprint=print_, enabled=enabled,
                          signature_scheme=scheme, secret_version=1, secret_encrypted=b"", created_at=now,
                          updated_at=now, max_in_flight=max_in_flight or DEFAULT_MAX_IN_FLIGHT, rate_limit=rate_limit)
    key = _new_key(row)
    session.add(row)
    _flush_unique(session, print_)
    shown = _seal(row, key, master_key)
    session.flush()
    audit_events.record(session, audit_events.ENDPOINT_CREATED, actor, row.id,
                        {"url": clean_url, "event_types": types, "enabled": enabled,
                         "max_in_flight": row.max_in_flight, "rate_limit": rate_limit,
                         "signature_scheme": scheme.value, "public_key": row.public_key})
    return WithSecret(row, shown)


class Unchanged:
    """A field an update leaves as it is (``None`` means "no limit" for the rate limit)."""


UNCHANGED = Unchanged()


def update_endpoint(session: Session, endpoint_id: int, *, actor: Actor, allowed: tuple[ssrf.Network, ...],
                    url: str | None = None, event_types: list[str] | None = None,
                    enabled: bool | None = None, max_in_flight: int | None = None,
                    rate_limit: float | Unchanged | None = UNCHANGED) -> WebhookEndpoint:
    row = get_endpoint(session, endpoint_id, for_update=True)
    changes: dict[str, Any] = {}
    new_url = validate_url(url, allowed) if url is not None else row.url
    new_types = normalize_event_types(event_types) if event_types is not None else list(row.event_types)
    new_rate = row.rate_limit if isinstance(rate_limit, Unchanged) else rate_limit
    check_share(max_in_flight, new_rate)
    if max_in_flight is not None and max_in_flight != row.max_in_flight:
        changes["max_in_flight"] = row.max_in_flight = max_in_flight
    if new_rate != row.rate_limit:
        changes["rate_limit"] = row.rate_limit = new_rate
    if new_url != row.url or new_types != list(row.event_types):
        print_ = fingerprint(new_url, new_types)
        _check_unique(session, print_, exclude_id=row.id)
        if new_url != row.url:
            changes["url"] = new_url
        if new_types != list(row.event_types):
            changes["event_types"] = new_types
        row.url, row.event_types, row.fingerprint = new_url, new_types, print_
        row.updated_at = utcnow()
        _flush_unique(session, print_)
    if changes:
        row.updated_at = utcnow()
        session.flush()
        audit_events.record(session, audit_events.ENDPOINT_UPDATED, actor, row.id, changes)
    if enabled is not None and enabled != row.enabled:
        if enabled:
            enable(session, row, actor)
        else:
            disable(session, row, "disabled by an operator", actor)
    return row


def disable(session: Session, row: WebhookEndpoint, reason: str, actor: Actor,
            now: dt.datetime | None = None) -> int | None:
    """Disable and audit (the audit event's id); None when it already was disabled.

    Pending deliveries of a disabled endpoint are cancelled when they are next picked up.
    """
    if not row.enabled:
        return None
    now = now or utcnow()
    row.enabled = False
    row.disabled_reason = reason[:255]
    row.disabled_at = now
    row.updated_at = now
    session.flush()
    return audit_events.record(session, audit_events.ENDPOINT_DISABLED, actor, row.id,
                               {"reason": reason, "url": row.url})


def enable(session: Session, row: WebhookEndpoint, actor: Actor) -> bool:
    if row.enabled:
        return False
    row.enabled = True
    row.disabled_reason = None
    row.disabled_at = None
    row.failing_since = None  # a fresh start: the 5-day clock restarts
    row.updated_at = utcnow()
    session.flush()
    audit_events.record(session, audit_events.ENDPOINT_ENABLED, actor, row.id, {"url": row.url})
    return True


def set_enabled(session: Session, endpoint_id: int, enabled: bool, actor: Actor) -> WebhookEndpoint:
    row = get_endpoint(session, endpoint_id, for_update=True)
    if enabled:
        enable(session, row, actor)
    else:
        disable(session, row, "disabled by an operator", actor)
    return row


def delete_endpoint(session: Session, endpoint_id: int, actor: Actor) -> None:
    row = get_endpoint(session, endpoint_id, for_update=True)
    url = row.url
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))  # deliveries cascade
    session.expunge(row)
    audit_events.record(session, audit_events.ENDPOINT_DELETED, actor, endpoint_id, {"url": url})


def rotate_secret(session: Session, endpoint_id: int, *, master_key: bytes, overlap_seconds: float,
                  actor: Actor, now: dt.datetime | None = None) -> WithSecret:
    """A new key of the endpoint's scheme signs at once; the old one keeps signing alongside it for
    ``overlap_seconds`` (a v1a endpoint publishes both public keys meanwhile)."""
    if overlap_seconds < 0:
        raise EndpointError("the overlap must be 0 seconds or more")
    now = now or utcnow()
    row = get_endpoint(session, endpoint_id, for_update=True)
    old_version = row.secret_version
    old_secret = unseal(master_key, row.secret_encrypted, secret_context(row.id, old_version))
    if overlap_seconds > 0:
        # The previous secret is re-sealed under its own version's context for the overlap window.
        row.previous_secret_encrypted = seal(master_key, old_secret, secret_context(row.id, old_version))
        row.previous_secret_expires_at = now + dt.timedelta(seconds=overlap_seconds)
        row.previous_public_key = row.public_key
    else:
        row.previous_secret_encrypted = None
        row.previous_secret_expires_at = None
        row.previous_public_key = None
    row.secret_version = old_version + 1
    shown = _seal(row, _new_key(row), master_key)
    row.updated_at = now
    session.flush()
    audit_events.record(session, audit_events.ENDPOINT_SECRET_ROTATED, actor, row.id,
                        {"secret_version": row.secret_version, "overlap_seconds": overlap_seconds,
                         "public_key": row.public_key})
    return WithSecret(row, shown)


def signing_secrets(row: WebhookEndpoint, master_key: bytes, now: dt.datetime) -> list[str]:
    """The current key, then the previous one while its overlap lasts; a key of another scheme than the
    endpoint's is refused rather than used."""
    secrets = [unseal(master_key, row.secret_encrypted, secret_context(row.id, row.secret_version)).decode()]
    if (row.previous_secret_encrypted is not None and row.previous_secret_expires_at is not None
            and row.previous_secret_expires_at > now):
        previous = unseal(master_key, row.previous_secret_encrypted, secret_context(row.id, row.secret_version - 1))
        secrets.append(previous.decode())
    if any(scheme_of(secret) != row.signature_scheme for secret in secrets):
        raise SecretError(f"endpoint {row.id} holds a key of another scheme than {row.signature_scheme}")
    return secrets
