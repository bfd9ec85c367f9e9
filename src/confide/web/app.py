"""The ASGI application factory."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from confide.auth import vapid
from confide.jobs.exports import ExportRunner
from confide.jobs.notify import build_runner
from confide.jobs.outbox import OutboxRelay
from confide.jobs.push import PushConsumer, PushSender
from confide.realtime.broker import make_broker
from confide.realtime.hub import Hub
from confide.runtime import Runtime
from confide.web import csp_report, csrf, errors, links, mailbox, pages, ws
from confide.web.admission import AdmissionControl
from confide.web.api import announcements as announcements_api
from confide.web.api import audit, auth, clients, conversations, practice, records
from confide.web.api import exports as exports_api
from confide.web.api import notifications as notification_api
from confide.web.api import oidc as oidc_api  # issue 5: OIDC sign-in (PA3)
from confide.web.api import push as push_api  # NT4: Web Push
from confide.web.api import signin as signin_api  # issue 5: second factor, sessions
from confide.web.api.schemas import ErrorOut
from confide.web.deps import session_cookie_name
from confide.web.middleware import BodyLimit, NoSearchInUrl, SecurityHeaders
from confide.web.openapi import with_security
from confide.web.ratelimit import SendLimiter

API_PREFIX = "/api/v1"

log = logging.getLogger("confide.web")

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
        (503, "Busy (`overloaded`) or the database unavailable: nothing was done; Retry-After"),
    ]
}


WS_PATH = f"{API_PREFIX}/ws"


class ConfideApp(FastAPI):
    """FastAPI, with the real-time socket taken straight to its endpoint (and the
    authentication declared in its OpenAPI description, `openapi`).

    An HTTP request passes the middleware stack and is done in milliseconds; a socket
    lives for hours, and every layer it passed (error handling, exception handling, the
    exit stack, the body limit, the security headers, the router) would keep a
    suspended frame of its own for all that time: ~9 frames per idle socket. The
    endpoint needs none of them (the layers pass websockets through untouched, and it
    answers every refusal itself), so `/api/v1/ws` without a query string (which would
    need the search-in-URL check) goes to it directly. The route stays
    registered too, for the route tables and for a server mounted under a root path.
    """

    def openapi(self) -> dict[str, Any]:
        """FastAPI's description, with the authentication declared (web/openapi.py)."""
        if self.openapi_schema is None:
            cookie = session_cookie_name(self.state.runtime)
            self.openapi_schema = with_security(super().openapi(), API_PREFIX, cookie)
        return self.openapi_schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH and not scope["query_string"]:
            scope["app"] = self
            await ws.realtime(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    broker = make_broker(settings.redis_url.get_secret_value() if settings.redis_url else None)
    hub = Hub(runtime.db, broker, runtime.session_policy, ws.ApiRenderer())
    relay = OutboxRelay(runtime.db, broker)
    # Data exports (EX4): long runs with progress and a renewed lease, one at a time per
    # process, so they never hold up the job runner's short email jobs (docs/records.md).
    export_runner = ExportRunner(runtime.db, settings.resolved_export_dir)
    # NT4: VAPID keys made at first start and kept; pushes sent after commit.
    vapid_keys = vapid.load_or_create(
        pem=settings.vapid_private_key.get_secret_value() if settings.vapid_private_key else None,
        path=settings.vapid_key_file,
        subject=settings.vapid_subject,
    )
    pusher = PushConsumer(runtime.db, PushSender(vapid_keys))
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
        await export_runner.start()
        await pusher.start()
        if runner is not None:
            await runner.start()
        log.info(
            "confide started: database %s, broker %s, jobs %s",
            runtime.db.engine.dialect.name,
            type(broker).__name__,
            "in this process" if runner is not None else "in confide worker processes",
        )
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            await pusher.stop()
            await export_runner.stop()
            await relay.stop()
            await hub.stop()
            await broker.stop()

    app = ConfideApp(
        # FastAPI's native OpenTelemetry off: Confide exports no traces, metrics or logs
        # to a collector (request paths hold record ids; docs/security.md). Left on, it
        # also asked OpenTelemetry on every request whether a provider was set up
        # (environment reads): 2.7 % of the CPU samples under send load (py-spy --gil),
        # too little to see in a throughput run.
        telemetry={"tracing": False, "metrics": False, "logs": False},
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
    app.state.export_runner = export_runner
    app.state.job_runner = runner
    # T11: sends per sender (web/ratelimit.py); T39 bounds: docs/operations.md.
    app.state.send_limiter = SendLimiter(settings.send_rate_per_second, settings.send_burst)

    # Routes are matched in order, one pattern after the other: the health check and the
    # conversations (the send path) first.
    # `async def`: answered on the event loop. A plain `def` route runs in one of anyio's
    # 40 worker threads, which under overload can all be taken by synchronous routes
    # waiting for the database; the health check would wait with them (T39). It was a
    # plain `def` until 2026-12-07, which also made the benchmark's "empty endpoint" a
    # thread hop: 2,400/s instead of 8,800/s (docs/benchmarks.md).
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Each API router is included on the app itself, with the prefix: FastAPI keeps
    # included routers as a tree walked on every request, and one more level (a router
    # holding these) made a request through the whole app about a quarter slower (an
    # unauthenticated send answered 401: 324-400 µs against 252-320; OpenAPI
    # description the same byte for byte).
    for router in (
        conversations.router,
        auth.router,
        practice.router,
        clients.router,
        records.router,
        audit.router,
        exports_api.router,  # data exports (issue 7)
        announcements_api.router,  # announcements (AN1, issue 7)
        signin_api.router,  # issue 5: second factor, sessions
        oidc_api.router,  # issue 5: OIDC sign-in (PA3)
        push_api.router,  # NT4: Web Push
        notification_api.router,  # NT1, NT3 settings; PA2, reset requests
    ):
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.state.oidc = oidc_api.make_client(runtime)  # None: not configured
    app.state.vapid = vapid_keys
    app.router.add_websocket_route(WS_PATH, ws.realtime)
    app.include_router(links.router)  # the landing pages of emailed links
    app.include_router(csp_report.router)  # CSP violation reports (issue 8)
    if settings.demo and settings.smtp_url is None:
        app.include_router(mailbox.router)  # demo mode: the mail folder, readable

    # --- web pages (issue 4, docs/web.md): `/` leads to sign-in or Messages ----------
    app.state.csrf_key = csrf.derive_key(runtime)
    pages.install(app)
    # --- end of web pages -------------------------------------------------------------

    errors.install(app)
    app.add_middleware(BodyLimit, limit=runtime.settings.max_body_bytes)
    app.add_middleware(NoSearchInUrl)
    # T39: outside everything that does work, inside the security headers.
    app.add_middleware(AdmissionControl, limit=settings.max_concurrent_requests)
    app.add_middleware(SecurityHeaders, hsts=runtime.settings.secure_cookies)
    return app
