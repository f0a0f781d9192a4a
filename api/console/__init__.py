"""The console at ``/console``: operator pages, the consumer portal, and the admin API's portal-link route."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from api.console import guard, license_pages, operator_pages, portal_links, portal_pages, signing_pages, web


def install(app: FastAPI) -> None:
    app.include_router(portal_links.router)
    app.include_router(operator_pages.router)
    app.include_router(portal_pages.router)
    app.include_router(signing_pages.router)
    app.include_router(license_pages.router)
    app.mount("/console/static", StaticFiles(directory=web.HERE / "static"), name="console-static")
    app.add_exception_handler(web.PageError, web.page_error)
    app.add_exception_handler(guard.SignInRequired, guard.sign_in_required)
