"""The signing keys page: every key's state, rotation of a scope, and revocation after a confirmation step.

Rotation and revocation are the key lifecycle's own functions (``domain.signing.rotation``), as the CLI
calls them; their events name the console key as the actor.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console import guard
from api.console.guard import SignedIn
from api.console.operator_pages import page
from api.console.web import PageError, in_transaction, master_key
from domain.console import queries
from domain.signing import rotation
from domain.signing.keys import SigningKeyError
from domain.signing.master_key import MasterKeyError

router = APIRouter(prefix="/console/signing-keys", include_in_schema=False)
_REFUSED = (rotation.KeyRotationError, SigningKeyError, MasterKeyError)


def _view(row: Any) -> dict[str, Any]:
    return {"kid": row.kid, "scope": row.scope, "state": row.state, "key_size": row.key_size,
            "created_at": row.created_at, "activated_at": row.activated_at, "retired_at": row.retired_at,
            "revoked_at": row.revoked_at}


async def _keys() -> list[dict[str, Any]]:
    return await in_transaction(lambda s: [_view(r) for r in queries.signing_keys(s)])


async def _run(work: Any) -> list[dict[str, Any]]:
    try:
        outcome = await in_transaction(work)
    except _REFUSED as exc:
        raise PageError(422, str(exc)) from exc
    return [{"kid": t.kid, "scope": t.scope, "from": t.from_state, "to": t.to_state} for t in outcome.transitions]


@router.get("")
async def key_list(request: Request, who: SignedIn) -> Response:
    return page(request, who, "signing_keys.html", keys=await _keys(), transitions=None, confirm=None)


@router.post("/rotate")
async def key_rotate(request: Request, who: SignedIn) -> Response:
    form = await guard.checked_form(request, who)
    scope = str(form.get("scope") or "global")
    immediate = form.get("immediate") == "true"
    key = master_key(request)
    done = await _run(lambda s: rotation.rotate(s, scope, immediate=immediate,
                                                master_key=key, actor=who.actor.label))
    return page(request, who, "signing_keys.html", keys=await _keys(), transitions=done, confirm=None)


@router.post("/revoke")
async def key_revoke(request: Request, who: SignedIn) -> Response:
    """Without ``confirm=<the kid>`` this only asks; with it, the key is revoked."""
    form = await guard.checked_form(request, who)
    kid = str(form.get("kid") or "").strip()
    if form.get("confirm") != kid or not kid:
        return page(request, who, "signing_keys.html", keys=await _keys(), transitions=None, confirm=kid)
    key = master_key(request)
    done = await _run(lambda s: rotation.revoke(s, kid, master_key=key, actor=who.actor.label))
    return page(request, who, "signing_keys.html", keys=await _keys(), transitions=done, confirm=None)
