"""Consumer portal links: a signed, expiring token that names one webhook endpoint, the only endpoint its
holder may read or act on. Every portal request opens the token again and scopes its queries by it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from domain.console.tokens import BadToken, derive_key, int_claim, mac, sign, unsign
from domain.platform.models import utcnow
from domain.webhooks import audit_events
from domain.webhooks.audit_events import Actor
from domain.webhooks.endpoints import EndpointError, get_endpoint

PURPOSE = "portal"
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 30 * 86400
PORTAL_LINK_ISSUED = "webhook_endpoint.portal_link_issued"
PORTAL_PATH = "/console/portal/"


class PortalLinkInvalid(ValueError):
    """Tampered with, malformed, or expired: the portal shows nothing."""


@dataclass(frozen=True)
class PortalLink:
    endpoint_id: int
    token: str
    expires_at: dt.datetime

    @property
    def path(self) -> str:
        return PORTAL_PATH + self.token


def portal_key(master_key: bytes) -> bytes:
    return derive_key(master_key, PURPOSE)


def sign_link(master_key: bytes, endpoint_id: int, ttl_seconds: float, now: dt.datetime) -> PortalLink:
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise EndpointError(f"the link's lifetime must be more than 0 and at most {MAX_TTL_SECONDS // 86400} days")
    expires = int(now.timestamp() + ttl_seconds)
    token = sign(portal_key(master_key), {"e": endpoint_id, "x": expires})
    return PortalLink(endpoint_id, token, dt.datetime.fromtimestamp(expires, dt.UTC))


def open_link(master_key: bytes, token: str, now: dt.datetime) -> int:
    """The endpoint id a valid, unexpired link names."""
    try:
        claims = unsign(portal_key(master_key), token)
        endpoint_id, expires = int_claim(claims, "e"), int_claim(claims, "x")
    except BadToken as exc:
        raise PortalLinkInvalid("this portal link is not valid") from exc
    if now.timestamp() >= expires:
        raise PortalLinkInvalid("this portal link has expired; ask for a new one")
    return endpoint_id


def form_token(master_key: bytes, token: str) -> str:
    """The CSRF token of the portal's forms, bound to the link."""
    return mac(portal_key(master_key), f"csrf:{token}")


def issue_link(session: Session, master_key: bytes, endpoint_id: int, *, ttl_seconds: float, actor: Actor,
               now: dt.datetime | None = None) -> PortalLink:
    """A link for an existing endpoint; issuing it is audited (EndpointNotFound for an unknown id)."""
    now = now or utcnow()
    get_endpoint(session, endpoint_id)
    link = sign_link(master_key, endpoint_id, ttl_seconds, now)
    audit_events.record(session, PORTAL_LINK_ISSUED, actor, endpoint_id,
                        {"expires_at": link.expires_at.isoformat(), "ttl_seconds": ttl_seconds})
    return link


def portal_actor(endpoint_id: int, source_ip: str | None = None, request_id: str | None = None) -> Actor:
    """How the audit log names a webhook consumer acting through the portal."""
    return Actor(f"portal:{endpoint_id}", source_ip=source_ip, request_id=request_id)
