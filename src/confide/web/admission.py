"""T39: admission control for HTTP requests (docs/operations.md, "Overload").

At most `limit` HTTP requests are in progress in this process; the next one gets 503
`overloaded` with `Retry-After: 1` at once, before its body is read or a route runs.
Without the bound, requests past the server's capacity queue without end (the sync
routes behind anyio's 40 worker threads, the sends behind the group committer): every
answer gets slower, memory grows, and clients time out and send again, so the work
done is wasted. With it, what is admitted is answered in about a second, and the rest
is told to come back.

The cost is a counter: everything runs on the event loop's thread, so no lock, and the
refusal is prepared once. `/healthz` is never refused: a load balancer that saw it fail
under load would take the process out just when it is doing the most work; it answers
from memory. The real-time socket has its own cap (web/ws.py, close 1013).
"""

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from confide.domain.errors import Overloaded

EXEMPT = frozenset({"/healthz"})


class AdmissionControl:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0
        self.refused = 0
        shed = Overloaded()
        body = json.dumps({"error": {"code": shed.code, "message": shed.message}}).encode()
        self._status = shed.status
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(shed.retry_after).encode()),
        ]
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            self.refused += 1
            # A fresh list: the layer outside (security headers) adds to it.
            start = {"type": "http.response.start", "status": self._status}
            await send({**start, "headers": list(self._headers)})
            await send({"type": "http.response.body", "body": self._body})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
