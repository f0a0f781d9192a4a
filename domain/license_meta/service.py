"""The write path of ``create-license-key-meta``: every check in order (docs/api.md), then one atomic write.

Every request, accepted or refused, leaves exactly one outbox event (the audit trail's source);
a 453 is the ``license_key_meta.created`` event itself, committed with the meta row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
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
from domain.events.outbox import META_CREATE_REFUSED, add_event_async
from domain.license_meta.codes import CREATE_META_CAPABILITY, AnyCode, Code, ExtensionCode
from domain.license_meta.rules import license_decision, meta_fields_decision
from domain.license_meta.store import MetaWriteRequest, MetaWriteResult, lookup_and_write_many
from domain.license_meta.write_batches import WriteBatcher
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.platform.ttl_cache import TtlCache
from domain.signing.keys import GLOBAL_SCOPE

USER_AGENT_MAX = 512
log = get_logger("keymeta.create_meta")


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
class CreateMetaInput:
    api_key: str | None
    license_key: str | None
    identifier: str | None
    key: str | None
    value: str | None
    source_ip: str | None
    user_agent: str | None
    request_id: str
    # Parse or field-limit problems found by the adapter: the request is refused with 901.
    errors: dict[str, list[str]] = field(default_factory=dict)
    # Refused by the adapter before step 1 (rate limit): audited and answered with this code.
    refusal: ExtensionCode | None = None
    refusal_errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateMetaResult:
    code: AnyCode
    signing_scope: str
    meta_id: int | None = None
    event_id: int | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)


class _RequestConnection:
    """The request's own connection, for reads and refusal events: opened on first use (cached API keys and
    block list need none) and released before the write batch, so that waiting requests cannot hold the
    connections the batch needs. Pooled and autocommit: every write is one atomic statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._stack: AsyncExitStack | None = None
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> _RequestConnection:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.release(exc)

    async def get(self) -> AsyncConnection:
        if self._conn is None:
            stack = AsyncExitStack()
            self._conn = await stack.enter_async_context(self._engine.connect())
            self._stack = stack
        return self._conn

    async def release(self, error: BaseException | None = None) -> None:
        stack, self._stack, self._conn = self._stack, None, None
        if stack is not None:
            if error is None:
                await stack.aclose()
            else:
                await stack.__aexit__(type(error), error, error.__traceback__)


class CreateMetaService:
    def __init__(self, engine: AsyncEngine, cache_ttl_seconds: float, max_write_batches: int = 4) -> None:
        self.engine = engine
        self._api_keys: TtlCache[ApiKeyRecord | None] = TtlCache(cache_ttl_seconds)
        self._blocklist: TtlCache[BlockList] = TtlCache(cache_ttl_seconds)
        self.write_batcher: WriteBatcher[MetaWriteRequest, MetaWriteResult] = WriteBatcher(
            self._write_batch, max_in_flight=max_write_batches)

    async def _write_batch(self, requests: Sequence[MetaWriteRequest]) -> list[MetaWriteResult]:
        async with self.engine.connect() as conn:  # autocommit: the statement is the transaction
            return await lookup_and_write_many(conn, requests)

    async def handle(self, request: CreateMetaInput) -> CreateMetaResult:
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
        async with _RequestConnection(self.engine) as db:
            if request.refusal is not None:
                # Audited like any refusal; the actor is recorded when the presented key is known (the
                # same cached digest lookup as step 1), so the trail shows which key hit its limit.
                if request.api_key is not None:
                    known = await self._api_key(db, request.api_key)
                    context["api_key_id"] = known.id if known is not None else None
                return await self._refuse(db, request, context, request.refusal, GLOBAL_SCOPE, now,
                                          errors=request.refusal_errors)
            if request.errors:
                return await self._refuse(db, request, context, Code.INCORRECT_DATA, GLOBAL_SCOPE, now,
                                          errors=request.errors)

            key_record = None
            if request.api_key is not None:
                key_record = await self._api_key(db, request.api_key)
            if key_record is not None:
                context["api_key_id"] = key_record.id
            blocklist = await self._blocklist.get("all", lambda: self._load_blocklist(db))
            identifier = request.identifier
            refusal = check_access(key_record, CREATE_META_CAPABILITY, parse_address(request.source_ip),
                                   identifier, blocklist, now)
            if refusal is None and identifier is None:
                refusal = Code.IDENTIFIER_REQUIRED
            if refusal is not None or identifier is None:
                return await self._refuse(db, request, context, refusal or Code.IDENTIFIER_REQUIRED,
                                          GLOBAL_SCOPE, now)

            if request.license_key is None:
                return await self._refuse(db, request, context, Code.INVALID_LICENSE_KEY, GLOBAL_SCOPE, now)
            await db.release()  # the write batch brings its own connection
            return await self._check_license_and_write(db, request, request.license_key, identifier, context,
                                                       now)

    async def _api_key(self, db: _RequestConnection, api_key: str) -> ApiKeyRecord | None:
        digest = api_key_digest(api_key)

        async def load() -> ApiKeyRecord | None:
            return await load_api_key(await db.get(), digest)

        return await self._api_keys.get(digest, load)

    async def _load_blocklist(self, db: _RequestConnection) -> BlockList:
        return await load_blocklist(await db.get())

    async def _check_license_and_write(self, db: _RequestConnection, request: CreateMetaInput, license_key: str,
                                       identifier: str, context: dict[str, Any], now: dt.datetime) -> CreateMetaResult:
        """Steps 7–15 in one round trip, shared with concurrent requests; a refusal (or a 452 race) costs a
        second one for its event."""
        done = await self.write_batcher.submit(MetaWriteRequest(
            license_key=license_key, identifier=identifier, key=request.key, value=request.value,
            payload=dict(context), request_id=request.request_id, now=now))
        if done.view is None:
            return await self._refuse(db, request, context, Code.INVALID_LICENSE_KEY, GLOBAL_SCOPE, now)
        context["product_id"] = done.view.product_id
        refusal = license_decision(done.view, now) or meta_fields_decision(request.key, request.value)
        if done.meta_id is not None:
            if refusal is not None:  # the SQL restatement of the checks drifted from license_decision
                log.error("create_meta.check_mismatch", code=int(refusal), meta_id=done.meta_id)
            return CreateMetaResult(code=Code.META_CREATED, signing_scope=done.view.signing_scope,
                                    meta_id=done.meta_id, event_id=done.event_id)
        return await self._refuse(db, request, context, refusal or Code.META_KEY_EXISTS,
                                  done.view.signing_scope, now)

    async def _refuse(self, db: _RequestConnection, request: CreateMetaInput, context: dict[str, Any],
                      code: AnyCode, scope: str, now: dt.datetime,
                      errors: dict[str, list[str]] | None = None) -> CreateMetaResult:
        event_id = await add_event_async(await db.get(), META_CREATE_REFUSED, context, request_id=request.request_id,
                                         outcome_code=int(code), now=now)
        return CreateMetaResult(code=code, signing_scope=scope, event_id=event_id, errors=errors or {})
