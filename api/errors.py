"""Answers for failures outside any endpoint's own logic."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.platform.logs import get_logger

log = get_logger("keymeta.api")


# What "the database cannot be reached" raises: the driver's error, or a plain OSError for a refused connection.
DATABASE_UNREACHABLE = (OperationalError, OSError)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DATABASE_UNREACHABLE)  # registered for these only
    cause = exc.orig if isinstance(exc, OperationalError) else exc
    log.error("database.unavailable", error=str(cause), path=request.url.path)
    return JSONResponse({"error": "database unavailable, retry shortly"}, status_code=503,
                        headers={"Retry-After": "1"})
