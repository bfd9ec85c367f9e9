"""Server-rendered pages: the practice web app, the client portal, sign-in, the PWA
files (docs/web.md). Each module calls the services directly, like web/api/*.py."""

from fastapi import FastAPI

from confide.web.pages import (
    announcements,
    audit,
    clients,
    exports,
    messages,
    portal,
    pwa,
    records,
    security,
    settings,
    signin,
)
from confide.web.pages.common import page_error
from confide.web.pages.static import STATIC, CachedStatic

ROUTERS = (
    signin.router,
    pwa.router,
    messages.router,
    announcements.router,  # before portal: /portal/announcements, not /portal/{id}
    portal.router,
    clients.router,
    records.router,
    settings.router,
    security.router,
    exports.router,
    audit.router,
)


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", CachedStatic(directory=STATIC), name="static")
    app.state.page_error = page_error
