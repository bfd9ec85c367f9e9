"""Static files (our stylesheet, our scripts, vendored htmx, icons) at /static.

They hold no health information, so unlike pages they may be cached; file names of
vendored files carry their version.
"""

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

STATIC = Path(__file__).resolve().parent.parent / "static"


class CachedStatic(StaticFiles):
    """StaticFiles that may be cached for an hour (the security middleware adds
    `no-store` only where a response sets no Cache-Control of its own)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cached(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"cache-control", b"public, max-age=3600"))
                message["headers"] = headers
            await send(message)

        await super().__call__(scope, receive, send_cached)  # type: ignore[arg-type]
