"""The write path of ``create-license-key-meta``: every SPEC §1 check in order, then one atomic write.

Every request, accepted or refused, leaves exactly one outbox event (the audit trail's source);
a 453 is the ``license_key_meta.created`` event itself, committed with the meta row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
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
from domain.license_meta.rules import (
    license_decision,
    lookup_license,
    meta_fields_decision,
    write_meta,
)
from domain.license_meta.store import FastPathResult, MetaWriteRequest, lookup_and_write_many
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
    # Refused by the adapter before SPEC step 1 (rate limit): audited and answered with this code.
    refusal: ExtensionCode | None = None
    refusal_errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateMetaResult:
    code: AnyCode
    signing_scope: str
    meta_id: int | None = None
    event_id: int | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)


class _Connections:
    """The request's database connection, opened on first use (cached API keys and block list need none).

    PostgreSQL: a pooled autocommit connection (every write is one atomic statement, no BEGIN/COMMIT trips),
    released before a write batch so that waiting requests cannot hold the connections the batch needs.
    SQLite: one BEGIN IMMEDIATE transaction (see domain.platform.database) under this process's writer lock.
    """

    def __init__(self, open_connection: Callable[[], AbstractAsyncContextManager[AsyncConnection]]) -> None:
        self._open = open_connection
        self._stack: AsyncExitStack | None = None
        self._conn: AsyncConnection | None = None

    async def get(self) -> AsyncConnection:
        if self._conn is None:
            stack = AsyncExitStack()
            self._conn = await stack.enter_async_context(self._open())
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
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. Requests of this process queue here, in order, instead of
        # in SQLite's busy handler, which retries with sleeps of up to 100 ms (24 concurrent requests:
        # 2.7 s without this lock, well under 1 s with it). Other processes still meet busy_timeout.
        self._sqlite_writer = asyncio.Lock()
        self.write_batcher: WriteBatcher[MetaWriteRequest, FastPathResult] = WriteBatcher(
            self._write_batch, max_in_flight=max_write_batches)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._sqlite_writer, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _connections(self) -> AsyncIterator[_Connections]:
        connections = _Connections(self.engine.connect if self._postgres else self._transaction)
        if not self._postgres:
            await connections.get()  # the writer lock is taken first, in arrival order
        try:
            yield connections
        except BaseException as exc:
            await connections.release(exc)
            raise
        await connections.release()

    async def _write_batch(self, requests: Sequence[MetaWriteRequest]) -> list[FastPathResult]:
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
        async with self._connections() as conns:
            if request.refusal is not None:
                # Audited like any refusal; the actor is recorded when the presented key is known (the
                # same cached digest lookup as step 1), so the trail shows which key hit its limit.
                if request.api_key is not None:
                    known = await self._api_key(conns, request.api_key)
                    context["api_key_id"] = known.id if known is not None else None
                return await self._refuse(conns, request, context, request.refusal, GLOBAL_SCOPE, now,
                                          errors=request.refusal_errors)
            if request.errors:
                return await self._refuse(conns, request, context, Code.INCORRECT_DATA, GLOBAL_SCOPE, now,
                                          errors=request.errors)

            key_record = None
            if request.api_key is not None:
                key_record = await self._api_key(conns, request.api_key)
            if key_record is not None:
                context["api_key_id"] = key_record.id
            blocklist = await self._blocklist.get("all", lambda: self._load_blocklist(conns))
            identifier = request.identifier
            refusal = check_access(key_record, CREATE_META_CAPABILITY, parse_address(request.source_ip),
                                   identifier, blocklist, now)
            if refusal is None and identifier is None:
                refusal = Code.IDENTIFIER_REQUIRED
            if refusal is not None or identifier is None:
                return await self._refuse(conns, request, context, refusal or Code.IDENTIFIER_REQUIRED,
                                          GLOBAL_SCOPE, now)

            if self._postgres and request.license_key is not None:
                await conns.release()  # the write batch brings its own connection
                return await self._postgres_fast_path(conns, request, identifier, context, now)

            conn = await conns.get()
            view = None
            if request.license_key is not None:
                view = await lookup_license(conn, request.license_key, identifier)
            if view is None:
                return await self._refuse(conns, request, context, Code.INVALID_LICENSE_KEY, GLOBAL_SCOPE, now)
            context["product_id"] = view.product_id
            refusal = license_decision(view, now) or meta_fields_decision(request.key, request.value)
            if refusal is not None or request.key is None or request.value is None:
                return await self._refuse(conns, request, context, refusal or Code.META_KEY_REQUIRED,
                                          view.signing_scope, now)

            written = await write_meta(
                conn, license_key_id=view.id, key=request.key, value=request.value, identifier=identifier,
                payload=context, request_id=request.request_id, now=now,
            )
            return CreateMetaResult(code=written.code, signing_scope=view.signing_scope,
                                    meta_id=written.meta_id, event_id=written.event_id)

    async def _api_key(self, conns: _Connections, api_key: str) -> ApiKeyRecord | None:
        digest = api_key_digest(api_key)

        async def load() -> ApiKeyRecord | None:
            return await load_api_key(await conns.get(), digest)

        return await self._api_keys.get(digest, load)

    async def _load_blocklist(self, conns: _Connections) -> BlockList:
        return await load_blocklist(await conns.get())

    async def _postgres_fast_path(self, conns: _Connections, request: CreateMetaInput, identifier: str,
                                  context: dict[str, Any], now: dt.datetime) -> CreateMetaResult:
        """Steps 7–15 in one round trip, shared with concurrent requests; a refusal (or a 452 race) costs a
        second one for its event."""
        assert request.license_key is not None
        done = await self.write_batcher.submit(MetaWriteRequest(
            license_key=request.license_key, identifier=identifier, key=request.key, value=request.value,
            payload=dict(context), request_id=request.request_id, now=now))
        if done.view is None:
            return await self._refuse(conns, request, context, Code.INVALID_LICENSE_KEY, GLOBAL_SCOPE, now)
        context["product_id"] = done.view.product_id
        refusal = license_decision(done.view, now) or meta_fields_decision(request.key, request.value)
        if done.meta_id is not None:
            if refusal is not None:  # the SQL restatement of the checks drifted from license_decision
                log.error("create_meta.check_mismatch", code=int(refusal), meta_id=done.meta_id)
            return CreateMetaResult(code=Code.META_CREATED, signing_scope=done.view.signing_scope,
                                    meta_id=done.meta_id, event_id=done.event_id)
        return await self._refuse(conns, request, context, refusal or Code.META_KEY_EXISTS,
                                  done.view.signing_scope, now)

    async def _refuse(self, conns: _Connections, request: CreateMetaInput, context: dict[str, Any],
                      code: AnyCode, scope: str, now: dt.datetime,
                      errors: dict[str, list[str]] | None = None) -> CreateMetaResult:
        event_id = await add_event_async(await conns.get(), META_CREATE_REFUSED, context, request_id=request.request_id,
                                         outcome_code=int(code), now=now)
        return CreateMetaResult(code=code, signing_scope=scope, event_id=event_id, errors=errors or {})

    def invalidate_caches(self) -> None:
        self._api_keys.invalidate()
        self._blocklist.invalidate()
