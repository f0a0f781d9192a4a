"""The metadata family's path: steps 1–12 shared by every operation (docs/api.md), then the operation's one
statement (``store``), whose returned license row and outcome give the code (``rules``).

A management API key may omit the identifier: steps 6 and 12 are skipped and the row records no writer. One that
sends an identifier is checked like any other key (step 12 included), so an identifier is never taken on trust.
Every result names the signature scheme of the presented key once it is known (the default before: code 100, a
refusal before step 1, an unparseable body).

Every request, accepted or refused, leaves exactly one outbox event (the audit trail's source). An outcome the
statement decided (453, 353, 252, 4540) is written by that statement with its change; a refusal is written
afterwards on the request's connection.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.access.checks import (
    ApiKeyRecord,
    BlockList,
    api_key_digest,
    check_access,
    load_api_key,
    load_blocklist,
    parse_address,
)
from domain.events.outbox import (
    META_CREATE_REFUSED,
    META_DELETE_REFUSED,
    META_READ_REFUSED,
    META_UPDATE_REFUSED,
    add_event_async,
)
from domain.license_meta.codes import AnyCode, Code, ExtensionCode, Operation
from domain.license_meta.rules import (
    CAP_ERRORS_REASON,
    STEP_CODES,
    fields_decision,
    license_decision,
)
from domain.license_meta.store import (
    MetaWriteRequest,
    MetaWriteResult,
    delete_many,
    lookup_and_write_many,
    read_many,
    row_of,
    update_many,
)
from domain.platform.database import is_connection_failure
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.platform.ttl_cache import TtlCache
from domain.platform.write_batches import WriteBatcher
from domain.signing.envelope import DEFAULT_SCHEME, SignatureScheme
from domain.signing.keys import GLOBAL_SCOPE

USER_AGENT_MAX = 512
log = get_logger("keymeta.license_meta")

REFUSED_EVENT = {
    Operation.CREATE: META_CREATE_REFUSED,
    Operation.UPDATE: META_UPDATE_REFUSED,
    Operation.DELETE: META_DELETE_REFUSED,
    Operation.GET: META_READ_REFUSED,
}


def mask_license_key(license_key: str | None) -> str | None:
    """Enough to recognise a key in an audit trail, never enough to use it."""
    if not license_key:
        return None
    if len(license_key) <= 8:
        return "*" * len(license_key)
    # At most half the key shows: 4 + 4 characters of a 10-character key would leave 2 to guess.
    shown = min(4, len(license_key) // 4)
    return f"{license_key[:shown]}…{license_key[-shown:]}"


@dataclass(frozen=True)
class MetaRequest:
    operation: Operation
    api_key: str | None
    license_key: str | None
    identifier: str | None
    key: str | None
    value: str | None  # None for the operations without a value
    source_ip: str | None
    user_agent: str | None
    request_id: str
    # Parse or field-limit problems found by the adapter: the request is refused with 901.
    errors: dict[str, list[str]] = field(default_factory=dict)
    # Refused by the adapter before step 1 (rate limit): audited and answered with this code.
    refusal: ExtensionCode | None = None
    refusal_errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class MetaResult:
    code: AnyCode
    signing_scope: str
    meta_id: int | None = None  # answered as ``meta_id`` (453, 353)
    event_id: int | None = None  # the request's one outbox event
    webhook: bool = False  # the event is of a webhook type: fan it out
    errors: dict[str, list[str]] = field(default_factory=dict)
    meta: list[dict[str, Any]] | None = None  # answered as ``meta`` (4540)
    signature_scheme: SignatureScheme = DEFAULT_SCHEME  # the presented key's, once it is known


class _RequestConnection:
    """The request's own connection, for reads and refusal events: opened on first use (cached API keys and
    block list need none) and released before the write batch, so that waiting requests cannot hold the
    connections the batch needs. Pooled and autocommit: every write is one atomic statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def get(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self._engine.connect().start()
        return self._conn

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


Batch = Callable[[AsyncConnection, Sequence[MetaWriteRequest]], Awaitable[list[MetaWriteResult]]]


class MetaService:
    def __init__(self, engine: AsyncEngine, cache_ttl_seconds: float, *, max_keys_per_license: int,
                 max_write_batches: int = 4) -> None:
        self.engine = engine
        self.max_keys_per_license = max_keys_per_license
        self._api_keys: TtlCache[ApiKeyRecord | None] = TtlCache(cache_ttl_seconds)
        self._blocklist: TtlCache[BlockList] = TtlCache(cache_ttl_seconds)
        # Creates may have max_write_batches statements running at once; each other operation half as many.
        others = max(1, max_write_batches // 2)
        self.write_batchers: dict[Operation, WriteBatcher[MetaWriteRequest, MetaWriteResult]] = {
            Operation.CREATE: self._batcher(self._create_batch, max_write_batches),
            Operation.UPDATE: self._batcher(update_many, others, conflict_key=row_of),
            Operation.DELETE: self._batcher(delete_many, others, conflict_key=row_of),
            Operation.GET: self._batcher(read_many, others),
        }

    def _batcher(self, run: Batch, max_in_flight: int,
                 conflict_key: Callable[[MetaWriteRequest], Hashable] | None = None,
                 ) -> WriteBatcher[MetaWriteRequest, MetaWriteResult]:
        async def execute(requests: Sequence[MetaWriteRequest]) -> list[MetaWriteResult]:
            async with self.engine.connect() as conn:  # autocommit: the statement is the transaction
                return await run(conn, requests)
        return WriteBatcher(execute, max_in_flight=max_in_flight, fails_all=is_connection_failure,
                            conflict_key=conflict_key)

    async def _create_batch(self, conn: AsyncConnection, requests: Sequence[MetaWriteRequest]
                            ) -> list[MetaWriteResult]:
        return await lookup_and_write_many(conn, requests, max_keys=self.max_keys_per_license)

    async def handle(self, request: MetaRequest) -> MetaResult:
        now = utcnow()
        context: dict[str, Any] = {
            "api_key_id": None,
            "source_ip": request.source_ip,
            "user_agent": (request.user_agent or "")[:USER_AGENT_MAX] or None,
            "identifier": request.identifier,
            "license_key_masked": mask_license_key(request.license_key),
            "meta_key": request.key,
            "product_id": None,
        }
        db = _RequestConnection(self.engine)
        try:
            key_record = await self.api_key_record(request.api_key, db.get)
            context["api_key_id"] = key_record.id if key_record is not None else None
            # A refusal before step 1 (rate limit) must not tell a guesser, by its scheme, that its key exists.
            scheme = key_record.signature_scheme if key_record is not None and request.refusal is None \
                else DEFAULT_SCHEME
            result = await self._answer(db, request, key_record, context, now)
            return replace(result, signature_scheme=scheme)
        finally:
            await db.release()

    async def api_key_record(self, api_key: str | None,
                             connection: Callable[[], Awaitable[AsyncConnection]]) -> ApiKeyRecord | None:
        """The presented key's record (None for none or an unknown one), cached by digest; ``connection()`` is
        awaited only when the cache misses."""
        if api_key is None:
            return None
        digest = api_key_digest(api_key)

        async def load() -> ApiKeyRecord | None:
            return await load_api_key(await connection(), digest)

        return await self._api_keys.get(digest, load)

    async def _answer(self, db: _RequestConnection, request: MetaRequest, key_record: ApiKeyRecord | None,
                   context: dict[str, Any], now: dt.datetime) -> MetaResult:
        refused = await self._admit(db, request, key_record, context, now)
        if refused is not None:
            return refused
        assert request.license_key is not None  # admitted; the identifier only when the key needs one
        statement = MetaWriteRequest(
            license_key=request.license_key, identifier=request.identifier, key=request.key,
            value=request.value, payload=dict(context), request_id=request.request_id, now=now)
        await db.release()  # the write batch brings its own connection
        done = await self.write_batchers[request.operation].submit(statement)
        return await self._decide(db, request, context, done, now)

    async def _admit(self, db: _RequestConnection, request: MetaRequest, key_record: ApiKeyRecord | None,
                     context: dict[str, Any], now: dt.datetime) -> MetaResult | None:
        """Everything before the statement: the adapter's refusals, 901, steps 1–6 and step 7's presence
        check. ``None``: the request goes on to its statement, which runs steps 7–12 with its write.

        The audit context names the presented key when it is known (the same cached digest lookup as step 1),
        so the trail shows which key hit its limit or sent bad data."""
        if request.refusal is not None:
            return await self._refuse(db, request, context, request.refusal, GLOBAL_SCOPE, now,
                                      errors=request.refusal_errors)
        if request.errors:
            return await self._refuse(db, request, context, Code.INCORRECT_DATA, GLOBAL_SCOPE, now,
                                      errors=request.errors)
        blocklist = await self._blocklist.get("all", lambda: self._load_blocklist(db))
        refusal = check_access(key_record, request.operation.capability, parse_address(request.source_ip),
                               request.identifier, blocklist, now)
        if refusal is None and request.identifier is None and not (key_record is not None and key_record.management):
            refusal = Code.IDENTIFIER_REQUIRED
        if refusal is None and request.license_key is None:
            refusal = Code.INVALID_LICENSE_KEY
        if refusal is not None:
            return await self._refuse(db, request, context, refusal, GLOBAL_SCOPE, now)
        return None

    async def _load_blocklist(self, db: _RequestConnection) -> BlockList:
        return await load_blocklist(await db.get())

    async def _decide(self, db: _RequestConnection, request: MetaRequest, context: dict[str, Any],
                      done: MetaWriteResult, now: dt.datetime) -> MetaResult:
        """Steps 7–15 from what the statement returned; a refusal costs a second round trip for its event."""
        if done.view is None:
            return await self._refuse(db, request, context, Code.INVALID_LICENSE_KEY, GLOBAL_SCOPE, now)
        context["product_id"] = done.view.product_id
        scope = done.view.signing_scope
        operation = request.operation
        codes = STEP_CODES[operation]
        refusal = license_decision(done.view, now) or fields_decision(operation, request.key, request.value)
        if done.event_id is not None:
            if refusal is not None:  # the SQL restatement of the checks drifted from the rules
                log.error("license_meta.check_mismatch", operation=str(operation), code=int(refusal),
                          event_id=done.event_id)
            return MetaResult(
                code=codes.success, signing_scope=scope,
                meta_id=done.meta_id if operation in (Operation.CREATE, Operation.UPDATE) else None,
                event_id=done.event_id, webhook=operation is not Operation.GET and done.meta_id is not None
                and (operation is not Operation.UPDATE or done.changed),
                meta=done.meta if operation is Operation.GET else None)
        if refusal is None and operation is Operation.CREATE and done.over_cap and not done.key_exists:
            reason = CAP_ERRORS_REASON.format(cap=self.max_keys_per_license)
            return await self._refuse(db, request, context, Code.INCORRECT_DATA, scope, now,
                                      errors={"key": [reason]})
        return await self._refuse(db, request, context, refusal or codes.refused, scope, now)

    async def _refuse(self, db: _RequestConnection, request: MetaRequest, context: dict[str, Any],
                      code: AnyCode, scope: str, now: dt.datetime,
                      errors: dict[str, list[str]] | None = None) -> MetaResult:
        event_id = await add_event_async(await db.get(), REFUSED_EVENT[request.operation], context,
                                         request_id=request.request_id, outcome_code=int(code), now=now)
        return MetaResult(code=code, signing_scope=scope, event_id=event_id, errors=errors or {})
