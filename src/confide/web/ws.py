"""The WebSocket endpoint, `/api/v1/ws` (NT5; protocol in docs/realtime.md).

Authentication is the session cookie, nothing else: no token ever travels in the URL
(PA7), and API tokens are for HTTP only. Because a browser sends the cookie with any
page's handshake, the Origin is checked first: a handshake from another origin is
refused (HTTP 403), which closes cross-site WebSocket hijacking. Clients that send no
Origin (not browsers) still need the cookie.

A handshake with no live session is accepted and closed at once with 4401, so that the
page learns "signed out" (a refused handshake looks like a network error to scripts).

T39: with `max_websockets` sockets open in this process, a new one is accepted and
closed at once with 1013 ("try again later"; the page's script reconnects with backoff),
before any database work (docs/operations.md, "Overload").
"""

from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket

from confide.domain.actors import Actor, Party, Via
from confide.domain.entities import Message
from confide.realtime.frames import NOT_ALLOWED, SESSION_ENDED, TRY_AGAIN_LATER, stay_open_code
from confide.realtime.hub import Hub
from confide.runtime import Runtime
from confide.services import sessions
from confide.services.directory import PartyInfo
from confide.store.uow import unit_of_work
from confide.web.api.schemas import MessageOut
from confide.web.deps import session_cookie_name


class ApiRenderer:
    """Frames show a message exactly as the JSON API does."""

    def message(self, message: Message, people: dict[Party, PartyInfo]) -> dict[str, Any]:
        return MessageOut.of(message, people).model_dump(mode="json")


def origin_allowed(websocket: WebSocket, runtime: Runtime) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    allowed = {runtime.settings.public_origin.rstrip("/")}
    host = websocket.headers.get("host")
    if host:
        scheme = "https" if websocket.url.scheme in ("wss", "https") else "http"
        allowed.add(f"{scheme}://{host}")
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" in allowed


def session_actor(runtime: Runtime, session_id: str, ip: str | None) -> tuple[Actor | None, int]:
    """The same session rules as `deps.current_actor` (PA5 limits, idle timer moved),
    and in the same read transaction whether the actor may keep a socket open
    (`stay_open_code`: 0 if so, else the close code)."""
    with unit_of_work(runtime.db, write=False) as uow:
        check = sessions.check_session(uow, session_id, runtime.session_policy, ip=ip)
        actor = check.actor if not check.expired and not check.must_enroll else None
        code = stay_open_code(uow, actor) if actor is not None else None
    if check.expired or check.stale:
        with unit_of_work(runtime.db, write=True) as uow:
            sessions.refresh_session(uow, session_id, check)
    if actor is None:
        return None, SESSION_ENDED
    return actor, code or 0


def _forget_handshake(websocket: WebSocket) -> None:
    """The handshake's headers (the session cookie among them) were read: an idle socket
    need not hold them, or Starlette's parsed copies, for hours (~2.5 KB each)."""
    websocket.scope["headers"] = []
    for cached in ("_headers", "_cookies", "_url"):
        websocket.__dict__.pop(cached, None)


async def realtime(websocket: WebSocket) -> None:
    """The `/api/v1/ws` endpoint: a plain Starlette route (app.py), without FastAPI's
    per-request dependency machinery, which an idle socket would hold for its lifetime."""
    runtime: Runtime = websocket.app.state.runtime
    hub: Hub = websocket.app.state.hub
    if not origin_allowed(websocket, runtime):
        await websocket.close(code=1008)  # before accept: the handshake gets 403
        return
    if hub.open_sockets >= runtime.settings.max_websockets:
        await websocket.accept()
        await websocket.close(code=TRY_AGAIN_LATER)
        return
    session_id = websocket.cookies.get(session_cookie_name(runtime), "")
    ip = websocket.client.host if websocket.client else None
    actor, code = None, SESSION_ENDED
    if session_id and len(session_id) <= 200:
        actor, code = await run_in_threadpool(session_actor, runtime, session_id, ip)
    await websocket.accept()
    if actor is None:
        await websocket.close(code=SESSION_ENDED)
        return
    if code:  # EN3/EN6, a member no longer active, a practice without messaging
        await websocket.close(code=code)
        return
    _forget_handshake(websocket)
    if actor.via is Via.PORTAL_LINK:
        # PA6: a portal link's session reads and answers its one conversation over
        # HTTP; the socket would reach the client's other conversations.
        await websocket.close(code=NOT_ALLOWED)
        return
    await hub.serve(websocket, actor, session_id, checked=True)
