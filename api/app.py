"""The FastAPI application factory: ``uvicorn --factory api.app:create_app``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from api import console, event_types, health, license_meta, metrics, openapi, public_keys, webhook_endpoints
from api.doorbell import make_doorbell
from api.errors import plain_database_unavailable, wrapped_database_unavailable
from api.rate_limit import RequestRateLimiter
from api.request_id import RequestIdMiddleware
from api.signed_response import EnvelopeSigner
from domain.access.checks import parse_network
from domain.idempotency.service import IdempotencyKeys
from domain.license_meta.service import MetaService
from domain.platform.database import CONNECTION_FAILURES, make_async_engine
from domain.platform.logs import configure_logging, get_logger
from domain.platform.settings import Settings
from domain.platform.startup import ready_settings
from domain.signing.keys import GLOBAL_SCOPE, SignerStore
from domain.signing.master_key import load_master_key

log = get_logger("keymeta.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or ready_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        master_key = load_master_key(settings)  # missing or malformed: refuse to start
        engine = make_async_engine(settings)
        store = SignerStore(master_key, settings.cache_ttl_seconds)
        # Fail at start-up, not on the first request, when the key cannot be found or opened.
        if await store.active(engine.connect, GLOBAL_SCOPE, time.monotonic()) is None:
            await engine.dispose()
            raise RuntimeError("no active global signing key: run 'keymeta bootstrap'")
        app.state.settings = settings
        app.state.master_key = master_key
        app.state.engine = engine
        app.state.trusted_proxies = tuple(parse_network(c) for c in settings.trusted_proxies)
        # Half the pool for shared create statements, a quarter for idempotency keys' shared reservations and
        # records, the rest for the other operations, lookups and refusals meanwhile.
        app.state.license_meta = MetaService(engine, settings.cache_ttl_seconds,
                                             max_keys_per_license=settings.meta_max_keys_per_license,
                                             max_write_batches=max(1, settings.api_db_pool_size // 2))
        app.state.idempotency = IdempotencyKeys(engine,
                                                max_batches_in_flight=max(1, settings.api_db_pool_size // 8))
        app.state.signer = EnvelopeSigner(store, engine.connect)
        app.state.doorbell = make_doorbell(settings)
        app.state.rate_limiter = RequestRateLimiter(settings)
        log.info("api.started", database_host=engine.url.host, database_name=engine.url.database,
                 db_pool_size=settings.api_db_pool_size)
        try:
            yield
        finally:
            app.state.doorbell.close()
            await app.state.rate_limiter.close()
            await engine.dispose()

    app = FastAPI(title="keymeta", version="0.1.0", lifespan=lifespan)
    app.add_middleware(license_meta.LicenseMetaEndpoint)  # innermost: the two below wrap it too
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(metrics.MetricsMiddleware)
    app.include_router(webhook_endpoints.router)
    console.install(app)  # /console pages, the consumer portal, the portal-link admin route
    app.include_router(public_keys.router)
    app.include_router(event_types.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    openapi.install(app)

    # The routers' answers are plain JSON, their 503 too; the signed endpoints answer their own, signed.
    for failure in CONNECTION_FAILURES:
        app.add_exception_handler(failure, plain_database_unavailable)
    app.add_exception_handler(DBAPIError, wrapped_database_unavailable)

    return app
