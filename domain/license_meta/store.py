"""The create-meta write: license lookup, checks, meta insert and outbox event in ONE autocommitted statement.

Round trips bound the request rate, so a request (or a batch of them) costs exactly one. The statement runs on
asyncpg's own prepared-statement cache: the SQLAlchemy layer costs more CPU per statement than the server does.

:func:`lookup_and_write_many` writes several requests in one statement (``WriteBatcher`` gathers them): the
same checks per request over ``unnest``-ed arrays. Duplicates of one (license key, meta key) inside a batch
resolve as a race does: the earliest request wins, the others get 452. A batch of one uses the
single-request statement, which costs the server less than the array form does for one row.

The ``WHERE`` of ``ins`` restates ``license_meta.rules.license_decision`` in SQL. Python still decides the
code from the returned license row; ``CreateMetaService`` logs an error should the two ever disagree, and
the per-code tests assert that no refused request stores a row.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from domain.events.outbox import META_CREATED
from domain.license_meta.rules import LicenseView

_LOOKUP_AND_WRITE = """
WITH lic AS (
    SELECT l.id, l.status, l.validity_days, l.assigned_at, l.product_id,
           p.active AS product_active, p.own_signing_key AS product_own_key,
           EXISTS (SELECT 1 FROM activations a WHERE a.license_key_id = l.id AND a.identifier = $2) AS activated
    FROM license_keys l LEFT JOIN products p ON p.id = l.product_id
    WHERE l.key = $1
),
ins AS (
    INSERT INTO license_key_meta (license_key_id, key, value, identifier, created_at)
    SELECT lic.id, $3, $4, $2, $5 FROM lic
    WHERE $6::boolean
      AND lic.status = 'assigned'
      AND (lic.validity_days = 0 OR lic.assigned_at IS NULL
           OR lic.assigned_at + make_interval(days => lic.validity_days) > $5)
      AND lic.product_active
      AND lic.activated
    ON CONFLICT ON CONSTRAINT uq_license_key_meta_license_key DO NOTHING
    RETURNING id
),
ev AS (
    INSERT INTO outbox_events (type, subject_id, outcome_code, payload, request_id, created_at)
    SELECT $9, ins.id, 453, ($7::jsonb || jsonb_build_object('product_id', lic.product_id))::json, $8, $5
    FROM ins, lic
    RETURNING id
)
SELECT lic.*, (SELECT id FROM ins) AS meta_id, (SELECT id FROM ev) AS event_id FROM lic
"""


_LOOKUP_AND_WRITE_MANY = """
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::boolean[],
                         $7::text[], $8::text[]) WITH ORDINALITY
        AS r(license_key, identifier, key, value, now, complete, payload, request_id, n)
),
lic AS (
    SELECT req.n, l.id, l.status, l.validity_days, l.assigned_at, l.product_id,
           p.active AS product_active, p.own_signing_key AS product_own_key,
           EXISTS (SELECT 1 FROM activations a
                   WHERE a.license_key_id = l.id AND a.identifier = req.identifier) AS activated
    FROM req JOIN license_keys l ON l.key = req.license_key LEFT JOIN products p ON p.id = l.product_id
),
candidates AS (
    SELECT DISTINCT ON (lic.id, req.key) req.n, lic.id AS license_key_id, lic.product_id, req.key, req.value,
           req.identifier, req.now, req.payload, req.request_id
    FROM req JOIN lic USING (n)
    WHERE req.complete
      AND lic.status = 'assigned'
      AND (lic.validity_days = 0 OR lic.assigned_at IS NULL
           OR lic.assigned_at + make_interval(days => lic.validity_days) > req.now)
      AND lic.product_active
      AND lic.activated
    ORDER BY lic.id, req.key, req.n
),
ins AS (
    INSERT INTO license_key_meta (license_key_id, key, value, identifier, created_at)
    SELECT license_key_id, key, value, identifier, now FROM candidates ORDER BY n
    ON CONFLICT ON CONSTRAINT uq_license_key_meta_license_key DO NOTHING
    RETURNING id, license_key_id, key
),
won AS (
    SELECT c.n, ins.id AS meta_id, c.product_id, c.payload, c.request_id, c.now
    FROM ins JOIN candidates c ON c.license_key_id = ins.license_key_id AND c.key = ins.key
),
ev AS (
    INSERT INTO outbox_events (type, subject_id, outcome_code, payload, request_id, created_at)
    SELECT $9, won.meta_id, 453, (won.payload::jsonb || jsonb_build_object('product_id', won.product_id))::json,
           won.request_id, won.now
    FROM won
    RETURNING id, subject_id
)
SELECT req.n, lic.id, lic.status, lic.validity_days, lic.assigned_at, lic.product_id, lic.product_active,
       lic.product_own_key, lic.activated, won.meta_id, ev.id AS event_id
FROM req LEFT JOIN lic USING (n) LEFT JOIN won USING (n) LEFT JOIN ev ON ev.subject_id = won.meta_id
ORDER BY req.n
"""


@dataclass(frozen=True)
class MetaWriteRequest:
    license_key: str
    identifier: str
    key: str | None
    value: str | None
    payload: dict[str, Any]
    request_id: str
    now: dt.datetime


@dataclass(frozen=True)
class MetaWriteResult:
    view: LicenseView | None  # None: no such license key
    meta_id: int | None  # set when the row was written (453)
    event_id: int | None


async def lookup_and_write_many(conn: AsyncConnection, requests: Sequence[MetaWriteRequest]) -> list[MetaWriteResult]:
    """One result per request, in order; one autocommitted statement for all of them."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if len(requests) == 1:
        one = requests[0]
        row = await driver.fetchrow(
            _LOOKUP_AND_WRITE, one.license_key, one.identifier, one.key, one.value, one.now, _complete(one),
            json.dumps(one.payload), one.request_id, META_CREATED,
        )
        return [_result(row)]
    rows = await driver.fetch(
        _LOOKUP_AND_WRITE_MANY, [r.license_key for r in requests], [r.identifier for r in requests],
        [r.key for r in requests], [r.value for r in requests], [r.now for r in requests],
        [_complete(r) for r in requests], [json.dumps(r.payload) for r in requests],
        [r.request_id for r in requests], META_CREATED,
    )
    return [_result(row if row["id"] is not None else None) for row in rows]


def _complete(request: MetaWriteRequest) -> bool:
    return request.key is not None and request.value is not None


def _result(row: Any) -> MetaWriteResult:
    if row is None:
        return MetaWriteResult(view=None, meta_id=None, event_id=None)
    view = LicenseView(
        id=row["id"], status=row["status"], validity_days=row["validity_days"], assigned_at=row["assigned_at"],
        product_id=row["product_id"], product_active=row["product_active"],
        product_own_key=bool(row["product_own_key"]), activated=bool(row["activated"]),
    )
    return MetaWriteResult(view=view, meta_id=row["meta_id"], event_id=row["event_id"])
