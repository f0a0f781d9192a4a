"""What the console's pages read that no other face reads: the signed-in key by id, one delivery with its
attempts, keyset pages of the audit log (newest first, on the ``seq`` index at any table size), signing keys,
and a license key's metadata with its audit history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.catalog.models import LicenseKey
from domain.events.models import AuditRecord
from domain.license_meta.models import LicenseKeyMeta
from domain.license_meta.service import mask_license_key
from domain.signing.models import SigningKey
from domain.webhooks.models import WebhookAttempt, WebhookDelivery
from domain.webhooks.replay import DeliveryNotFound, delivery_view

MAX_PAGE = 200


def delivery_detail(session: Session, delivery_id: int, *, endpoint_id: int | None = None) -> dict[str, Any]:
    """One delivery and every attempt; with ``endpoint_id``, only if it belongs to that endpoint."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or (endpoint_id is not None and row.endpoint_id != endpoint_id):
        raise DeliveryNotFound(f"no webhook delivery with id {delivery_id}")
    attempts = list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == row.id)
                                    .order_by(WebhookAttempt.attempt_no)))
    return delivery_view(row, attempts)


def audit_page(session: Session, *, before_seq: int | None = None, action: str | None = None,
               limit: int = 50) -> list[AuditRecord]:
    """Newest first; the next page starts before the smallest ``seq`` of this one."""
    query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(max(1, min(limit, MAX_PAGE)))
    if before_seq is not None:
        query = query.where(AuditRecord.seq < before_seq)
    if action:
        query = query.where(AuditRecord.action == action)
    return list(session.scalars(query))


def signing_keys(session: Session) -> list[SigningKey]:
    """Every signing key, by scope then age (the private halves are never read out)."""
    return list(session.scalars(select(SigningKey).order_by(SigningKey.scope, SigningKey.id)))


@dataclass(frozen=True)
class LicenseMeta:
    license_key: LicenseKey
    rows: list[LicenseKeyMeta]
    history: list[AuditRecord]  # newest first


def license_meta(session: Session, license_key: str, *, meta_key: str | None = None,
                 history_limit: int = 50) -> LicenseMeta | None:
    """A license key's metadata rows and its audit history (masked key and product, as the chain records
    them; ``meta_key`` narrows the history to one row's key); None for an unknown key."""
    row = session.scalars(select(LicenseKey).where(LicenseKey.key == license_key)).first()
    if row is None:
        return None
    metas = list(session.scalars(select(LicenseKeyMeta).where(LicenseKeyMeta.license_key_id == row.id)
                                 .order_by(LicenseKeyMeta.key)))
    query = (select(AuditRecord).where(AuditRecord.license_key_masked == mask_license_key(license_key),
                                       AuditRecord.product_id == row.product_id)
             .order_by(AuditRecord.seq.desc()).limit(max(1, min(history_limit, MAX_PAGE))))
    if meta_key:
        query = query.where(AuditRecord.meta_key == meta_key)
    return LicenseMeta(row, metas, list(session.scalars(query)))
