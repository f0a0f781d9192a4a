"""Answers for failures outside any endpoint's own logic: the database cannot be reached.

The signed endpoints sign every answer, so their 503 is the signed envelope too (code 5030), signed by the global
key this process holds in memory: the outage answer never waits on the database it is about. The plain JSON
routers (admin API, public keys, ...) may answer with :func:`plain_database_unavailable` instead.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.metrics import record_result_code
from api.signed_response import SigningUnavailable
from domain.license_meta.codes import ExtensionCode
from domain.platform.database import is_connection_failure
from domain.platform.logs import get_logger

log = get_logger("keymeta.api")


RETRY = {"Retry-After": "1"}
UNAVAILABLE = ExtensionCode.SERVICE_UNAVAILABLE
PLAIN_MESSAGE = "database unavailable, retry shortly"


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The signed 503 (code 5030, ``Retry-After``); unsigned only if this process never read a signing key."""
    _log(request, exc)
    record_result_code(request, UNAVAILABLE)
    try:
        # The presented key's signature scheme would need the database: the default scheme, as for code 100.
        response: Response = request.app.state.signer.respond_without_database(UNAVAILABLE)
    except SigningUnavailable as problem:
        # Cannot happen once the API has started (it refuses to start without a global key); should it, the
        # answer is still a clear 503 with the code, unsigned: nothing is claimed that a signature would back.
        log.error("signing.unavailable", error=str(problem), path=request.url.path)
        return JSONResponse({"error": PLAIN_MESSAGE, "code": int(UNAVAILABLE)}, status_code=503, headers=RETRY)
    response.headers.update(RETRY)
    return response


async def plain_database_unavailable(request: Request, exc: Exception) -> Response:
    """The plain JSON 503 of a route whose answers are not signed envelopes."""
    _log(request, exc)
    return JSONResponse({"error": PLAIN_MESSAGE}, status_code=503, headers=RETRY)


def _log(request: Request, exc: Exception) -> None:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    log.error("database.unavailable", error=str(cause), path=request.url.path)


async def wrapped_database_unavailable(request: Request, exc: Exception) -> Response:
    """A driver error SQLAlchemy wraps in a plain ``DBAPIError``: the 503 when the database cannot serve now,
    else the error goes on to the server's own 500."""
    if not is_connection_failure(exc):
        raise exc
    return await plain_database_unavailable(request, exc)
