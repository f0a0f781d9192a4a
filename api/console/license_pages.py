"""The license metadata page: a license key's metadata rows and their history from the audit log.

The license key is posted, never put in a URL (URLs end up in logs and browser history), and every look-up
is audited like the API's own reads, with the key masked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console import guard
from api.console.guard import SignedIn
from api.console.operator_pages import page
from api.console.web import in_transaction
from domain.console import queries
from domain.license_meta.service import mask_license_key
from domain.webhooks import audit_events

router = APIRouter(prefix="/console/license-meta", include_in_schema=False)
LICENSE_META_READ = "console.license_meta_read"
MAX_KEY_LENGTH = 255


@router.get("")
async def license_form(request: Request, who: SignedIn) -> Response:
    return page(request, who, "license_meta.html", license_key="", meta_key="", found=None, searched=False)


@router.post("")
async def license_lookup(request: Request, who: SignedIn) -> Response:
    form = await guard.checked_form(request, who)
    license_key = str(form.get("license_key") or "").strip()[:MAX_KEY_LENGTH]
    meta_key = str(form.get("meta_key") or "").strip()[:MAX_KEY_LENGTH]

    def work(session: Any) -> queries.LicenseMeta | None:
        found = queries.license_meta(session, license_key, meta_key=meta_key or None) if license_key else None
        audit_events.record(session, LICENSE_META_READ, who.actor, found.license_key.id if found else None,
                            {"license_key_masked": mask_license_key(license_key), "meta_key": meta_key or None,
                             "found": found is not None})
        return found

    found = await in_transaction(work)
    return page(request, who, "license_meta.html", license_key=license_key, meta_key=meta_key, found=found,
                searched=True)
