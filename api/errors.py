"""Answers for failures outside any endpoint's own logic."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.platform.logs import get_logger

log = get_logger("keymeta.api")


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OperationalError)  # registered for OperationalError only
    log.error("database.unavailable", error=str(exc.orig), path=request.url.path)
    return JSONResponse({"error": "database unavailable, retry shortly"}, status_code=503,
                        headers={"Retry-After": "1"})
