"""The ASGI application factory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from confide.jobs.notify import build_runner
from confide.jobs.outbox import OutboxRelay
from confide.realtime.broker import make_broker
from confide.realtime.hub import Hub
from confide.runtime import Runtime
from confide.web import errors, links, mailbox, ws
from confide.web.api import audit, auth, clients, conversations, practice, records
from confide.web.api import notifications as notification_api
from confide.web.api.schemas import ErrorOut
from confide.web.middleware import BodyLimit, SecurityHeaders

API_PREFIX = "/api/v1"

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in [
        (400, "Malformed request"),
        (401, "Not signed in"),
        (403, "Not permitted"),
        (404, "Missing, or not yours: the same answer (PM7)"),
        (409, "Conflict"),
        (413, "Body too large"),
        (422, "Invalid input"),
    ]
}


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    broker = make_broker(settings.redis_url.get_secret_value() if settings.redis_url else None)
    hub = Hub(runtime.db, broker, runtime.session_policy, ws.ApiRenderer())
    relay = OutboxRelay(runtime.db, broker)
    # Durable jobs (email; docs/notifications.md): inside `serve` unless
    # CONFIDE_RUN_JOBS=false leaves them to `confide worker` processes.
    runner = build_runner(runtime) if settings.run_jobs else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Realtime (docs/realtime.md): the outbox relay feeds the event log and the
        # broker; the hub feeds this process's sockets.
        await broker.start()
        await hub.start()
        await relay.start()
        if runner is not None:
            await runner.start()
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            await relay.stop()
            await hub.stop()
            await broker.stop()

    app = FastAPI(
        title="Confide API",
        version="1",
        description="Secure messaging for therapy and mental-health practices.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        # No Swagger page: it loads scripts from a CDN, which the CSP (and the rule of no
        # third-party requests) forbids. The description is at openapi_url.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.hub = hub
    app.state.job_runner = runner
    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    for module in (auth, practice, clients, conversations, records, audit):
        api.include_router(module.router)
    api.include_router(notification_api.router)  # NT1, NT3 settings; PA2, reset requests
    app.include_router(api)
    app.include_router(links.router)  # the landing pages of emailed links
    if settings.demo and settings.smtp_url is None:
        app.include_router(mailbox.router)  # demo mode: the mail folder, readable
    app.include_router(ws.router, prefix=API_PREFIX)

    @app.get("/", include_in_schema=False)
    def root() -> dict[str, str]:
        # The web app comes with its own issue; until then, say where the API is.
        return {"name": "Confide", "api": API_PREFIX, "openapi": app.openapi_url or ""}

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    errors.install(app)
    app.add_middleware(BodyLimit, limit=runtime.settings.max_body_bytes)
    app.add_middleware(SecurityHeaders, hsts=runtime.settings.secure_cookies)
    return app
