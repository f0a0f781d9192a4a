"""License checks (SPEC §1 steps 7–15) and the atomic meta + outbox write."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.events.outbox import META_CREATE_REFUSED, META_CREATED, event_values
from domain.license_meta.codes import Code
from domain.platform.models import Activation, LicenseKey, LicenseKeyMeta, OutboxEvent, Product


@dataclass(frozen=True)
class LicenseView:
    id: int
    status: str
    validity_days: int
    assigned_at: dt.datetime | None
    product_id: int | None
    product_active: bool | None  # None: the product row does not exist
    product_own_key: bool
    activated: bool  # an activation exists for (license key, identifier)

    @property
    def signing_scope(self) -> str:
        return f"product:{self.product_id}" if self.product_own_key and self.product_id else "global"


def is_expired(view: LicenseView, now: dt.datetime) -> bool:
    if view.validity_days == 0 or view.assigned_at is None:
        return False
    return view.assigned_at + dt.timedelta(days=view.validity_days) <= now


def license_decision(view: LicenseView | None, now: dt.datetime) -> Code | None:
    """Steps 7–12, in order."""
    if view is None:
        return Code.INVALID_LICENSE_KEY
    if view.status == "blocked":
        return Code.LICENSE_BLOCKED
    if view.status != "assigned":
        return Code.LICENSE_NOT_ASSIGNED
    if is_expired(view, now):
        return Code.LICENSE_EXPIRED
    if not view.product_active:
        return Code.PRODUCT_INACTIVE
    if not view.activated:
        return Code.NO_ACTIVATION
    return None


def meta_fields_decision(key: str | None, value: str | None) -> Code | None:
    """Steps 13–14."""
    if key is None:
        return Code.META_KEY_REQUIRED
    if value is None:
        return Code.META_VALUE_REQUIRED
    return None


_lookup = (
    select(
        LicenseKey.id,
        LicenseKey.status,
        LicenseKey.validity_days,
        LicenseKey.assigned_at,
        LicenseKey.product_id,
        Product.active.label("product_active"),
        Product.own_signing_key.label("product_own_key"),
        exists()
        .where(Activation.license_key_id == LicenseKey.id)
        .where(Activation.identifier == bindparam("identifier"))
        .label("activated"),
    )
    .select_from(LicenseKey)
    .outerjoin(Product, Product.id == LicenseKey.product_id)
    .where(LicenseKey.key == bindparam("license_key"))
)


async def lookup_license(conn: AsyncConnection, license_key: str, identifier: str) -> LicenseView | None:
    row = (await conn.execute(_lookup, {"license_key": license_key, "identifier": identifier})).first()
    if row is None:
        return None
    return LicenseView(
        id=row.id,
        status=row.status,
        validity_days=row.validity_days,
        assigned_at=row.assigned_at,
        product_id=row.product_id,
        product_active=row.product_active,
        product_own_key=bool(row.product_own_key),
        activated=bool(row.activated),
    )


@dataclass(frozen=True)
class MetaWrite:
    meta_id: int | None  # None: the key already existed on this license (452)
    event_id: int

    @property
    def code(self) -> Code:
        return Code.META_CREATED if self.meta_id is not None else Code.META_KEY_EXISTS


# PostgreSQL: meta row and its outbox event in ONE autocommitted statement (one round trip, atomic).
# The unique constraint decides races; the event records whichever outcome happened.
_PG_WRITE = text(
    """
    WITH ins AS (
        INSERT INTO license_key_meta (license_key_id, key, value, identifier, created_at)
        VALUES (:license_key_id, :key, :value, :identifier, :now)
        ON CONFLICT ON CONSTRAINT uq_license_key_meta_license_key DO NOTHING
        RETURNING id
    )
    INSERT INTO outbox_events (type, subject_id, outcome_code, payload, request_id, created_at, fanned_out_at)
    SELECT CASE WHEN ins.id IS NULL THEN :refused_type ELSE :created_type END,
           ins.id,
           CASE WHEN ins.id IS NULL THEN 452 ELSE 453 END,
           :payload, :request_id, :now,
           CASE WHEN ins.id IS NULL THEN :now END
    FROM (SELECT 1) AS one LEFT JOIN ins ON true
    RETURNING id, subject_id
    """
).bindparams(
    bindparam("payload", type_=OutboxEvent.__table__.c.payload.type),
    bindparam("now", type_=OutboxEvent.__table__.c.created_at.type),
)


async def write_meta(conn: AsyncConnection, *, license_key_id: int, key: str, value: str, identifier: str,
                     payload: dict[str, Any], request_id: str, now: dt.datetime) -> MetaWrite:
    """Insert the meta row and its outbox event atomically.

    PostgreSQL: ``conn`` is in autocommit mode and the single statement is the transaction.
    SQLite (no data-modifying CTEs): ``conn`` must be inside a transaction the caller commits.
    """
    if conn.dialect.name == "postgresql":
        row = (await conn.execute(_PG_WRITE, {
            "license_key_id": license_key_id, "key": key, "value": value, "identifier": identifier,
            "now": now, "payload": payload, "request_id": request_id,
            "created_type": META_CREATED, "refused_type": META_CREATE_REFUSED,
        })).one()
        return MetaWrite(meta_id=row.subject_id, event_id=row.id)

    meta_id = (await conn.execute(
        sqlite.insert(LicenseKeyMeta).values(license_key_id=license_key_id, key=key, value=value, identifier=identifier,
                           created_at=now)
        .on_conflict_do_nothing(index_elements=["license_key_id", "key"])
        .returning(LicenseKeyMeta.id)
    )).scalar()
    event_type = META_CREATED if meta_id is not None else META_CREATE_REFUSED
    outcome = Code.META_CREATED if meta_id is not None else Code.META_KEY_EXISTS
    event_id = (await conn.execute(
        insert(OutboxEvent).values(event_values(
            event_type, payload, request_id=request_id, subject_id=meta_id, outcome_code=int(outcome), now=now,
        )).returning(OutboxEvent.id)
    )).scalar_one()
    return MetaWrite(meta_id=meta_id, event_id=int(event_id))
