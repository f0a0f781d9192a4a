"""Admin API: ``POST /api/v1/webhook-endpoints/{id}/portal-link`` issues a consumer portal link for one
endpoint (the ``manage-webhooks`` key, as for the rest of that API). The link is shown in the answer only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from api.console.web import master_key
from api.webhook_endpoints import AdminActor, RowId, in_transaction
from domain.console import portal

router = APIRouter(prefix="/api/v1/webhook-endpoints", tags=["webhooks"])


class PortalLinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_seconds: float = Field(default=portal.DEFAULT_TTL_SECONDS, gt=0, le=portal.MAX_TTL_SECONDS)


@router.post("/{endpoint_id}/portal-link", status_code=201)
async def issue_portal_link(endpoint_id: RowId, request: Request, actor: AdminActor,
                            body: PortalLinkIn | None = None) -> dict[str, Any]:
    key = master_key(request)
    ttl = body.ttl_seconds if body is not None else portal.DEFAULT_TTL_SECONDS
    link = await in_transaction(lambda s: portal.issue_link(s, key, endpoint_id, ttl_seconds=ttl, actor=actor))
    base = request.app.state.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return {"endpoint_id": link.endpoint_id, "url": base + link.path, "path": link.path,
            "expires_at": link.expires_at}
