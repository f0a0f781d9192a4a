"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: it can do its work).

Readiness checks, run concurrently, each bounded in time:
- ``database``: ``SELECT 1`` through the app's async engine;
- ``migrations``: the database's ``alembic_version`` equals the head revision this code was built with;
- ``broker``: a kombu connection can be established (one attempt, ~1 s), in a thread so the event loop stays free;
- ``signing``: a global signing key can sign. While the database is unreachable the key held in memory still
  signs the outage answers, so the check passes and says so; it fails when there is no active key to sign with.
A failing check yields 503 naming it. Error details go to the log, the body carries only the exception type.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import anyio
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from fastapi import APIRouter, Request
from kombu import Connection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import JSONResponse

from api.signed_response import EnvelopeSigner
from domain.platform.database import CONNECTION_FAILURES
from domain.platform.logs import get_logger
from domain.platform.migrate import alembic_config, head_revision
from domain.platform.settings import Settings
from messaging.celery_config import celery_config

router = APIRouter(include_in_schema=False)
log = get_logger("keymeta.health")

DATABASE_TIMEOUT_SECONDS = 2.0
BROKER_TIMEOUT_SECONDS = 1.0
NO_STORE = {"Cache-Control": "no-store"}


class NotReady(Exception):
    """A check ran and found something wrong (as opposed to failing with an exception)."""


@lru_cache(maxsize=1)
def _head() -> str | None:
    return head_revision()


@lru_cache(maxsize=64)
def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


async def check_database(engine: AsyncEngine) -> None:
    with anyio.fail_after(DATABASE_TIMEOUT_SECONDS):
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))


async def check_migrations(engine: AsyncEngine) -> str:
    with anyio.fail_after(DATABASE_TIMEOUT_SECONDS):
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    head = _head()
    if list(rows) == [head]:
        return "ok"
    if len(rows) == 1 and not _known(rows[0]):
        # A newer release migrated first (rolling deploy, expand/contract): this code keeps serving.
        return f"ok: database at {rows[0]}, ahead of this code's {head}"
    raise NotReady(f"database at {', '.join(rows) or 'no revision'}, code expects {head}")


def _connect_broker(settings: Settings) -> None:
    config = celery_config(settings)
    with Connection(config["broker_url"], transport_options=config["broker_transport_options"],
                    connect_timeout=BROKER_TIMEOUT_SECONDS) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                     timeout=BROKER_TIMEOUT_SECONDS)


async def check_broker(settings: Settings) -> None:
    # abandon_on_cancel: a connect stuck past the deadline must not hold the response (the thread ends by itself).
    with anyio.fail_after(BROKER_TIMEOUT_SECONDS * 3):
        await anyio.to_thread.run_sync(_connect_broker, settings, abandon_on_cancel=True)


async def check_signing(signer: EnvelopeSigner) -> str:
    try:
        with anyio.fail_after(DATABASE_TIMEOUT_SECONDS):
            kid = await signer.global_kid()
    except CONNECTION_FAILURES:
        held = signer.held_global_kid()
        if held is None:
            raise NotReady("no signing key held in memory and the database is unreachable") from None
        return f"ok: key {held} held in memory (database unreachable)"
    if kid is None:
        raise NotReady("no active global signing key: run 'keymeta bootstrap'")
    return "ok"


CHECKS: dict[str, Any] = {"database": check_database, "migrations": check_migrations, "broker": check_broker,
                          "signing": check_signing}


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.get("/readyz")
async def readyz(request: Request, exclude: str = "") -> JSONResponse:
    """``?exclude=broker`` skips a check: the API serves without the broker (the doorbell is best effort and
    the sweeper re-rings), so a Kubernetes readiness probe should not take every replica out of service
    during a broker outage."""
    state = request.app.state
    checks: dict[str, str] = {}
    skipped = {name.strip() for name in exclude.split(",") if name.strip()}
    unknown = skipped - set(CHECKS)
    if unknown:
        return JSONResponse({"error": f"unknown check(s): {', '.join(sorted(unknown))}"}, status_code=400,
                            headers=NO_STORE)

    async def run(name: str, check: Any, *args: Any) -> None:
        try:
            checks[name] = await check(*args) or "ok"
        except NotReady as problem:
            checks[name] = str(problem)
            log.warning("readiness.failed", check=name, reason=str(problem))
        except Exception as exc:  # noqa: BLE001 — any failure means "not ready"; the log keeps the cause
            checks[name] = f"failed: {type(exc).__name__}"
            log.warning("readiness.failed", check=name, error=repr(exc))

    arguments = {"database": state.engine, "migrations": state.engine, "broker": state.settings,
                 "signing": state.signer}
    async with anyio.create_task_group() as group:
        for name, check in CHECKS.items():
            if name not in skipped:
                group.start_soon(run, name, check, arguments[name])
    ordered = {name: checks[name] for name in CHECKS if name in checks}
    failing = [name for name, outcome in ordered.items() if not outcome.startswith("ok")]
    if failing:
        return JSONResponse({"status": "not ready", "failing": failing, "checks": ordered}, status_code=503,
                            headers=NO_STORE)
    return JSONResponse({"status": "ready", "checks": ordered}, headers=NO_STORE)
