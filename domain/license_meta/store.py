"""The statements of the metadata family: each request is ONE autocommitted statement that looks the license up,
restates its checks, writes (or reads) the meta row and writes the outbox event of the outcome it decided.

Round trips bound the request rate, so a batch of requests of one operation (``WriteBatcher`` gathers them)
costs exactly one: the same checks per request over ``unnest``-ed arrays. The statements run on asyncpg's own
prepared-statement cache: the SQLAlchemy layer costs more CPU per statement than the server does.

Concurrency is decided by the database, never by a read-then-write: the unique ``(license_key_id, key)`` decides
concurrent creates; an update locks the row it replaces (``FOR UPDATE``, rows in id order) and bumps its version
under that lock; a delete locks and deletes its row, so of N concurrent deletes exactly one returns it. A create
counts the license's keys under a transaction-scoped advisory lock per license (``license_key_meta_count_locked``,
a volatile function, so the count sees every row committed while it waited): concurrent creates cannot pass the
per-license cap, and the lock touches no row.

Duplicates of one (license key, meta key) inside a create batch resolve as a race does: the earliest request
wins, the others get 452. An update or delete batch holds at most one request per row (:func:`row_of`): the
others go into a later statement. A lone request uses its operation's single-request statement: a batch
statement is planned anew on every run, which costs more than one request saves.

The ``ok`` CTE restates ``license_meta.rules.license_decision`` in SQL. Python still decides the code from the
returned license row; the service logs an error should the two ever disagree, and the per-code tests assert that no
refused request writes a row. Events of webhook types carry ``data``: the webhook payload's snapshot, taken here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from domain.catalog.models import LicenseStatus
from domain.events.outbox import (
    META_CREATED,
    META_DELETED,
    META_READ,
    META_UPDATE_UNCHANGED,
    META_UPDATED,
)
from domain.license_meta.codes import Operation
from domain.license_meta.rules import LicenseView, fields_complete
from domain.platform.database import run_prepared


def _status(status: LicenseStatus) -> str:
    """A license status as a SQL literal, from the enum (its values are plain lowercase words)."""
    assert status.value.isidentifier() and status.value.islower(), status
    return f"'{status.value}'"


def _compose(sql: str) -> str:
    """Fill in the shared parts: ``{license}`` (the license CTEs of one request), ``{batch}`` (those of a batch),
    ``{license_columns}``, ``{insert_event}``, ``{assigned}`` (the status that may carry meta, from
    ``LicenseStatus``) and ``ISO(expr)``, which writes a time as ISO 8601 UTC with a Z, whole seconds (as
    ``domain.webhooks.fan_out.iso_z`` does)."""
    sql = sql.replace("{license}", _LICENSE).replace("{batch}", _BATCH).replace("{insert_event}", _INSERT_EVENT)
    sql = sql.replace("{license_columns}", _LICENSE_COLUMNS)
    sql = sql.replace("{assigned}", _status(LicenseStatus.ASSIGNED))
    return re.sub(r"ISO\(([^()]*)\)", r"""to_char(\1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')""", sql)


# Steps 7–12: $1 license key, $2 identifier, $3 now, $4 whether the operation's parameters are complete.
# A NULL identifier (admitted for management keys only) skips step 12: ``activated`` is true, and the row written
# records no writer.
_LICENSE = """
lic AS (
    SELECT l.id, l.status, l.validity_days, l.assigned_at, l.product_id,
           p.active AS product_active, p.own_signing_key AS product_own_key,
           ($2::text IS NULL OR EXISTS (SELECT 1 FROM activations a
                   WHERE a.license_key_id = l.id AND a.identifier = $2::text)) AS activated
    FROM license_keys l LEFT JOIN products p ON p.id = l.product_id
    WHERE l.key = $1::text
),
ok AS (
    SELECT lic.id, lic.product_id FROM lic
    WHERE $4::boolean
      AND lic.status = {assigned}
      AND (lic.validity_days = 0 OR lic.assigned_at IS NULL
           OR lic.assigned_at + make_interval(days => lic.validity_days) > $3::timestamptz)
      AND lic.product_active
      AND lic.activated
)"""

_INSERT_EVENT = "INSERT INTO outbox_events (type, subject_id, outcome_code, payload, request_id, created_at, " \
                "fanned_out_at)"

# The batch statements' requests, one per element of $1…$8, and those of them that pass steps 7–12 (``ok``).
_BATCH = """
req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::boolean[],
                         $7::text[], $8::text[]) WITH ORDINALITY
        AS r(license_key, identifier, key, value, now, complete, payload, request_id, n)
),
lic AS (
    SELECT req.n, l.id, l.status, l.validity_days, l.assigned_at, l.product_id,
           p.active AS product_active, p.own_signing_key AS product_own_key,
           (req.identifier IS NULL OR EXISTS (SELECT 1 FROM activations a
                   WHERE a.license_key_id = l.id AND a.identifier = req.identifier)) AS activated
    FROM req JOIN license_keys l ON l.key = req.license_key LEFT JOIN products p ON p.id = l.product_id
),
ok AS (
    SELECT req.*, lic.id AS license_key_id, lic.product_id FROM req JOIN lic USING (n)
    WHERE req.complete
      AND lic.status = {assigned}
      AND (lic.validity_days = 0 OR lic.assigned_at IS NULL
           OR lic.assigned_at + make_interval(days => lic.validity_days) > req.now)
      AND lic.product_active
      AND lic.activated
)"""

# Every batch statement answers one row per request, in order: the license row (NULL: no such license key) and
# the statement's outcome.
_LICENSE_COLUMNS = "req.n, lic.id, lic.status, lic.validity_days, lic.assigned_at, lic.product_id, " \
                   "lic.product_active, lic.product_own_key, lic.activated"

# $5 audit context, $6 request id, $7 key, $8 value, $9 event type, $10 the per-license cap.
_CREATE = _compose("""
WITH {license},
counted AS (
    SELECT ok.id, license_key_meta_count_locked(ok.id) AS meta_count FROM ok
),
ins AS (
    INSERT INTO license_key_meta (license_key_id, key, value, identifier, version, created_at)
    SELECT counted.id, $7::text, $8::text, $2::text, 1, $3 FROM counted WHERE counted.meta_count < $10::bigint
    ON CONFLICT ON CONSTRAINT uq_license_key_meta_license_key DO NOTHING
    RETURNING id, version, created_at
),
ev AS (
    {insert_event}
    SELECT $9::text, ins.id, 453, ($5::jsonb || jsonb_build_object('product_id', ok.product_id, 'data',
               jsonb_build_object('meta_id', ins.id, 'version', ins.version, 'license_key', $1::text,
                                  'product_id', ok.product_id, 'identifier', $2::text, 'key', $7::text,
                                  'value', $8::text, 'created_at', ISO(ins.created_at))))::json,
           $6::text, $3, NULL
    FROM ins, ok
    RETURNING id
)
SELECT lic.*, (SELECT id FROM ins) AS meta_id, (SELECT id FROM ev) AS event_id,
       CASE WHEN (SELECT id FROM ins) IS NULL THEN EXISTS (SELECT 1 FROM license_key_meta m
                 WHERE m.license_key_id = lic.id AND m.key = $7::text) END AS key_exists,
       COALESCE((SELECT meta_count >= $10::bigint FROM counted), false) AS over_cap
FROM lic
""")


# $5 audit context, $6 request id, $7 key, $8 value, $9 changed event type, $10 unchanged event type.
# The same value again changes nothing: no version, no updated_at, no webhook event; still 353, audited.
_UPDATE = _compose("""
WITH {license},
old AS (
    SELECT m.id, m.value FROM license_key_meta m JOIN ok ON m.license_key_id = ok.id
    WHERE m.key = $7::text
    FOR UPDATE OF m
),
upd AS (
    UPDATE license_key_meta m SET value = $8::text, version = m.version + 1, updated_at = $3, identifier = $2::text
    FROM old WHERE m.id = old.id AND m.value IS DISTINCT FROM $8::text
    RETURNING m.id, m.key, m.version, m.created_at, m.updated_at, old.value AS previous_value
),
ev AS (
    {insert_event}
    SELECT CASE WHEN upd.id IS NULL THEN $10::text ELSE $9::text END, old.id, 353,
           ($5::jsonb || jsonb_build_object('product_id', ok.product_id)
                      || CASE WHEN upd.id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('data',
               jsonb_build_object('meta_id', upd.id, 'version', upd.version, 'license_key', $1::text,
                                  'product_id', ok.product_id, 'identifier', $2::text, 'key', upd.key,
                                  'value', $8::text, 'previous_value', upd.previous_value,
                                  'created_at', ISO(upd.created_at), 'updated_at', ISO(upd.updated_at)))
                      END)::json,
           $6::text, $3, CASE WHEN upd.id IS NULL THEN $3 END
    FROM old CROSS JOIN ok LEFT JOIN upd ON upd.id = old.id
    RETURNING id
)
SELECT lic.*, (SELECT id FROM old) AS meta_id, EXISTS (SELECT 1 FROM upd) AS changed,
       (SELECT id FROM ev) AS event_id
FROM lic
""")

# $5 audit context, $6 request id, $7 key, $8 event type. The event's version is the row's last one + 1.
_DELETE = _compose("""
WITH {license},
del AS (
    DELETE FROM license_key_meta m USING ok
    WHERE m.license_key_id = ok.id AND m.key = $7::text
    RETURNING m.id, m.key, m.value, m.version, m.created_at
),
ev AS (
    {insert_event}
    SELECT $8::text, del.id, 252, ($5::jsonb || jsonb_build_object('product_id', ok.product_id, 'data',
               jsonb_build_object('meta_id', del.id, 'version', del.version + 1, 'license_key', $1::text,
                                  'product_id', ok.product_id, 'identifier', $2::text, 'key', del.key,
                                  'value', del.value, 'created_at', ISO(del.created_at),
                                  'deleted_at', ISO($3::timestamptz))))::json,
           $6::text, $3, NULL
    FROM del, ok
    RETURNING id
)
SELECT lic.*, (SELECT id FROM del) AS meta_id, (SELECT id FROM ev) AS event_id FROM lic
""")

# $5 audit context, $6 request id, $7 key or NULL (every key), $8 event type. Keys in byte order.
_READ = _compose("""
WITH {license},
found AS (
    SELECT COALESCE(json_agg(json_build_object(
               'meta_id', m.id, 'key', m.key, 'value', m.value, 'version', m.version,
               'created_at', ISO(m.created_at), 'updated_at', ISO(m.updated_at))
               ORDER BY m.key COLLATE "C"), '[]'::json) AS meta,
           count(m.id) AS found_rows
    FROM ok JOIN license_key_meta m ON m.license_key_id = ok.id
    WHERE $7::text IS NULL OR m.key = $7::text
),
ev AS (
    {insert_event}
    SELECT $8::text, NULL, 4540, ($5::jsonb || jsonb_build_object('product_id', ok.product_id))::json,
           $6::text, $3, $3
    FROM ok, found WHERE $7::text IS NULL OR found.found_rows > 0
    RETURNING id
)
SELECT lic.*, (SELECT meta FROM found) AS meta, (SELECT id FROM ev) AS event_id FROM lic
""")


# $9 event type, $10 the per-license cap.
_CREATE_MANY = _compose("""
WITH {batch},
candidates AS (
    SELECT DISTINCT ON (license_key_id, key) * FROM ok ORDER BY license_key_id, key, n
),
counted AS (
    SELECT license_key_id, license_key_meta_count_locked(license_key_id) AS meta_count
    FROM (SELECT DISTINCT license_key_id FROM candidates ORDER BY license_key_id) licenses
),
ranked AS (
    SELECT c.n, c.license_key_id,
           counted.meta_count + row_number() OVER (PARTITION BY c.license_key_id ORDER BY c.n) > $10::bigint
               AS over_cap
    FROM candidates c JOIN counted USING (license_key_id)
    WHERE NOT EXISTS (SELECT 1 FROM license_key_meta m WHERE m.license_key_id = c.license_key_id AND m.key = c.key)
),
ins AS (
    INSERT INTO license_key_meta (license_key_id, key, value, identifier, version, created_at)
    SELECT c.license_key_id, c.key, c.value, c.identifier, 1, c.now
    FROM candidates c JOIN ranked USING (n) WHERE NOT ranked.over_cap ORDER BY c.n
    ON CONFLICT ON CONSTRAINT uq_license_key_meta_license_key DO NOTHING
    RETURNING id, license_key_id, key, version, created_at
),
won AS (
    SELECT c.*, ins.id AS meta_id, ins.version, ins.created_at
    FROM ins JOIN candidates c ON c.license_key_id = ins.license_key_id AND c.key = ins.key
),
ev AS (
    {insert_event}
    SELECT $9::text, won.meta_id, 453, (won.payload::jsonb || jsonb_build_object('product_id', won.product_id, 'data',
               jsonb_build_object('meta_id', won.meta_id, 'version', won.version, 'license_key', won.license_key,
                                  'product_id', won.product_id, 'identifier', won.identifier, 'key', won.key,
                                  'value', won.value, 'created_at', ISO(won.created_at))))::json,
           won.request_id, won.now, NULL
    FROM won
    RETURNING id, subject_id
)
SELECT {license_columns}, won.meta_id, ev.id AS event_id,
       CASE WHEN won.meta_id IS NULL THEN EXISTS (SELECT 1 FROM license_key_meta m
                 WHERE m.license_key_id = lic.id AND m.key = req.key) END AS key_exists,
       COALESCE(ranked.over_cap, false) AS over_cap
FROM req LEFT JOIN lic USING (n) LEFT JOIN won USING (n) LEFT JOIN ev ON ev.subject_id = won.meta_id
     -- A duplicate shares its pair's fate: over the cap when the earliest request of its key was.
     LEFT JOIN candidates earliest ON earliest.license_key_id = lic.id AND earliest.key = req.key
     LEFT JOIN ranked ON ranked.n = earliest.n
ORDER BY req.n
""")

# $9 changed event type, $10 unchanged event type. At most one request per (license, key): an update locks the
# row it replaces, in id order (so batches cannot deadlock), and bumps its version under that lock. The same
# value again changes nothing: no version, no updated_at, no webhook event; still 353, audited.
_UPDATE_MANY = _compose("""
WITH {batch},
old AS (
    SELECT ok.n, m.id, m.value AS previous_value
    FROM ok JOIN license_key_meta m ON m.license_key_id = ok.license_key_id AND m.key = ok.key
    ORDER BY m.id
    FOR UPDATE OF m
),
upd AS (
    UPDATE license_key_meta m SET value = ok.value, version = m.version + 1, updated_at = ok.now,
                                  identifier = ok.identifier
    FROM old JOIN ok USING (n)
    WHERE m.id = old.id AND m.value IS DISTINCT FROM ok.value
    RETURNING old.n, m.id, m.key, m.version, m.created_at, m.updated_at, old.previous_value
),
ev AS (
    {insert_event}
    SELECT CASE WHEN upd.id IS NULL THEN $10::text ELSE $9::text END, old.id, 353,
           (ok.payload::jsonb || jsonb_build_object('product_id', ok.product_id)
                              || CASE WHEN upd.id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('data',
               jsonb_build_object('meta_id', upd.id, 'version', upd.version, 'license_key', ok.license_key,
                                  'product_id', ok.product_id, 'identifier', ok.identifier, 'key', upd.key,
                                  'value', ok.value, 'previous_value', upd.previous_value,
                                  'created_at', ISO(upd.created_at), 'updated_at', ISO(upd.updated_at)))
                              END)::json,
           ok.request_id, ok.now, CASE WHEN upd.id IS NULL THEN ok.now END
    FROM old JOIN ok USING (n) LEFT JOIN upd USING (n)
    ORDER BY old.n
    RETURNING id, subject_id
)
SELECT {license_columns}, old.id AS meta_id, upd.id IS NOT NULL AS changed, ev.id AS event_id
FROM req LEFT JOIN lic USING (n) LEFT JOIN old USING (n) LEFT JOIN upd USING (n)
     LEFT JOIN ev ON ev.subject_id = old.id
ORDER BY req.n
""")

# $9 event type. At most one request per (license, key); rows are locked in id order, so of concurrent deletes
# of one row exactly one returns it. The event's version is the row's last one + 1.
_DELETE_MANY = _compose("""
WITH {batch},
target AS (
    SELECT ok.n, m.id
    FROM ok JOIN license_key_meta m ON m.license_key_id = ok.license_key_id AND m.key = ok.key
    ORDER BY m.id
    FOR UPDATE OF m
),
del AS (
    DELETE FROM license_key_meta m USING target WHERE m.id = target.id
    RETURNING target.n, m.id, m.key, m.value, m.version, m.created_at
),
ev AS (
    {insert_event}
    SELECT $9::text, del.id, 252, (ok.payload::jsonb || jsonb_build_object('product_id', ok.product_id, 'data',
               jsonb_build_object('meta_id', del.id, 'version', del.version + 1, 'license_key', ok.license_key,
                                  'product_id', ok.product_id, 'identifier', ok.identifier, 'key', del.key,
                                  'value', del.value, 'created_at', ISO(del.created_at),
                                  'deleted_at', ISO(ok.now))))::json,
           ok.request_id, ok.now, NULL
    FROM del JOIN ok USING (n)
    ORDER BY del.n
    RETURNING id, subject_id
)
SELECT {license_columns}, del.id AS meta_id, ev.id AS event_id
FROM req LEFT JOIN lic USING (n) LEFT JOIN del USING (n) LEFT JOIN ev ON ev.subject_id = del.id
ORDER BY req.n
""")

# $9 event type. A key of NULL reads every key, in byte order. A read event has no subject, so its id is drawn
# first to tell which request it belongs to.
_READ_MANY = _compose("""
WITH {batch},
found AS (
    SELECT ok.n, COALESCE(json_agg(json_build_object(
               'meta_id', m.id, 'key', m.key, 'value', m.value, 'version', m.version,
               'created_at', ISO(m.created_at), 'updated_at', ISO(m.updated_at))
               ORDER BY m.key COLLATE "C") FILTER (WHERE m.id IS NOT NULL), '[]'::json) AS meta,
           count(m.id) AS found_rows
    FROM ok LEFT JOIN license_key_meta m
         ON m.license_key_id = ok.license_key_id AND (ok.key IS NULL OR m.key = ok.key)
    GROUP BY ok.n
),
audited AS (
    SELECT ok.n, nextval(pg_get_serial_sequence('outbox_events', 'id')) AS event_id
    FROM ok JOIN found USING (n) WHERE ok.key IS NULL OR found.found_rows > 0
),
ev AS (
    INSERT INTO outbox_events (id, type, subject_id, outcome_code, payload, request_id, created_at, fanned_out_at)
    SELECT audited.event_id, $9::text, NULL, 4540,
           (ok.payload::jsonb || jsonb_build_object('product_id', ok.product_id))::json, ok.request_id, ok.now, ok.now
    FROM audited JOIN ok USING (n)
)
SELECT {license_columns}, found.meta, audited.event_id
FROM req LEFT JOIN lic USING (n) LEFT JOIN found USING (n) LEFT JOIN audited USING (n)
ORDER BY req.n
""")


@dataclass(frozen=True)
class MetaWriteRequest:
    license_key: str
    identifier: str | None  # None: a management key's request, which needs no activation and records no writer
    key: str | None
    value: str | None
    payload: dict[str, Any]
    request_id: str
    now: dt.datetime


@dataclass(frozen=True)
class MetaWriteResult:
    view: LicenseView | None  # None: no such license key
    meta_id: int | None  # the row written, updated or deleted
    event_id: int | None  # the event the statement wrote with its outcome (None: refused, the caller audits)
    key_exists: bool = False  # create: the key is on the license already
    over_cap: bool = False  # create: the license holds its limit of keys
    changed: bool = False  # update: the value differed
    meta: list[dict[str, Any]] = field(default_factory=list)  # read: the rows found


async def lookup_and_write_many(conn: AsyncConnection, requests: Sequence[MetaWriteRequest], *,
                                max_keys: int) -> list[MetaWriteResult]:
    """Creates: one result per request, in order; one autocommitted statement for all of them."""
    if len(requests) == 1:
        return [await _run_one(conn, _CREATE, Operation.CREATE, requests[0], META_CREATED, max_keys)]
    return await _run_batch(conn, _CREATE_MANY, Operation.CREATE, requests, META_CREATED, max_keys)


async def update_many(conn: AsyncConnection, requests: Sequence[MetaWriteRequest]) -> list[MetaWriteResult]:
    """Updates, at most one per (license key, meta key): one result per request, in order; one statement."""
    _require_one_per_row(requests)
    if len(requests) == 1:
        return [await _run_one(conn, _UPDATE, Operation.UPDATE, requests[0], META_UPDATED, META_UPDATE_UNCHANGED)]
    return await _run_batch(conn, _UPDATE_MANY, Operation.UPDATE, requests, META_UPDATED, META_UPDATE_UNCHANGED)


async def delete_many(conn: AsyncConnection, requests: Sequence[MetaWriteRequest]) -> list[MetaWriteResult]:
    """Deletes, at most one per (license key, meta key): one result per request, in order; one statement."""
    _require_one_per_row(requests)
    if len(requests) == 1:
        return [await _run_one(conn, _DELETE, Operation.DELETE, requests[0], META_DELETED)]
    return await _run_batch(conn, _DELETE_MANY, Operation.DELETE, requests, META_DELETED)


async def read_many(conn: AsyncConnection, requests: Sequence[MetaWriteRequest]) -> list[MetaWriteResult]:
    """Reads (a key of None reads every key): one result per request, in order; one statement."""
    if len(requests) == 1:
        return [await _run_one(conn, _READ, Operation.GET, requests[0], META_READ)]
    return await _run_batch(conn, _READ_MANY, Operation.GET, requests, META_READ)


def row_of(request: MetaWriteRequest) -> tuple[str, str | None]:
    """The meta row a request names: an update or delete batch holds at most one request per row."""
    return request.license_key, request.key


def _require_one_per_row(requests: Sequence[MetaWriteRequest]) -> None:
    # One statement cannot apply two changes to one row, nor tell which request an event belongs to.
    if len({row_of(r) for r in requests}) != len(requests):
        raise ValueError("a batch names one (license key, meta key) twice")


async def _run_one(conn: AsyncConnection, sql: str, operation: Operation, request: MetaWriteRequest,
                   *params: Any) -> MetaWriteResult:
    row = await run_prepared(
        conn, "fetchrow", sql, request.license_key, request.identifier, request.now,
        fields_complete(operation, request.key, request.value), json.dumps(request.payload), request.request_id,
        request.key, *([request.value] if operation in (Operation.CREATE, Operation.UPDATE) else []), *params,
    )
    return _result(row)


async def _run_batch(conn: AsyncConnection, sql: str, operation: Operation, requests: Sequence[MetaWriteRequest],
                     *params: Any) -> list[MetaWriteResult]:
    rows = await run_prepared(
        conn, "fetch", sql, [r.license_key for r in requests], [r.identifier for r in requests],
        [r.key for r in requests], [r.value for r in requests], [r.now for r in requests],
        [fields_complete(operation, r.key, r.value) for r in requests],
        [json.dumps(r.payload) for r in requests], [r.request_id for r in requests], *params,
    )
    return [_result(row if row["id"] is not None else None) for row in rows]


def _result(row: Any) -> MetaWriteResult:
    if row is None:
        return MetaWriteResult(view=None, meta_id=None, event_id=None)
    view = LicenseView(
        id=row["id"], status=row["status"], validity_days=row["validity_days"], assigned_at=row["assigned_at"],
        product_id=row["product_id"], product_active=row["product_active"],
        product_own_key=bool(row["product_own_key"]), activated=bool(row["activated"]),
    )
    names = set(row.keys())
    meta = row["meta"] if "meta" in names and row["meta"] is not None else []
    if isinstance(meta, str):  # json arrives as text unless the connection decodes it
        meta = json.loads(meta)
    return MetaWriteResult(
        view=view, meta_id=row["meta_id"] if "meta_id" in names else None, event_id=row["event_id"],
        key_exists=bool(row.get("key_exists")), over_cap=bool(row.get("over_cap")),
        changed=bool(row.get("changed")), meta=meta,
    )
