"""Pure ASGI middleware: security headers on every response, and a request body limit.

(Pure ASGI rather than BaseHTTPMiddleware: it adds no task per request, which matters
on the send path.)
"""

import json
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        # Pages (docs/web.md): our own scripts, styles, images, the socket and the
        # manifest/worker, all from 'self'; no inline script or style, no other origin.
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; manifest-src 'self'; worker-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
        # Violations are reported (directive and blocked scheme only: web/csp_report.py).
        # `report-uri` alone: with `report-to` present Chromium ignores `report-uri` and
        # uses the Reporting API, which delivered nothing in our tests (headless
        # Chromium 156, 70 s, --short-reporting-delay); Firefox knows only report-uri.
        b"report-uri /csp-report",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
NO_STORE = (b"cache-control", b"no-store")
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.extra = [*SECURITY_HEADERS, NO_STORE] + ([HSTS] if hsts else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in self.extra if h[0] not in names
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# Query parameter names that carry what someone typed to find something. Searches take
# their term in a POST body (`POST /api/v1/clients/search`, `/recipients/search`,
# `/emoji/search`, and the pages' search forms): a URL reaches access logs, proxies and
# browser history. No route has a parameter of these names (a test walks the routes and
# the OpenAPI description); a request that sends one anyway is refused here, with a 400
# that says where the term goes, rather than silently answered without it.
SEARCH_PARAMS = frozenset(
    {"q", "query", "search", "term", "terms", "keyword", "keywords", "prefix", "name", "text"}
)


class NoSearchInUrl:
    """Refuses (400 `search_in_url`) any request whose query string names a search term."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] in ("http", "websocket") else b""
        if query and _names_a_search(query):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_json(
                send,
                400,
                "search_in_url",
                "Search terms go in the request body (POST …/search), never in the URL.",
            )
            return
        await self.app(scope, receive, send)


def _names_a_search(query: bytes) -> bool:
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return any(name.strip().lower() in SEARCH_PARAMS for name, _ in pairs)


async def _send_json(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses bodies over `limit` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send)
                    return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            # Over the limit while streaming (no Content-Length): answer 413 ourselves,
            # then tell the app the client went away, and drop whatever it sends.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        await _send_json(
            send, 413, "body_too_large", f"The request body is over {self.limit} bytes."
        )
