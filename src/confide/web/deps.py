"""Request dependencies: the runtime, units of work, and the current actor.

Authentication has one seam, `current_actor`: a session cookie or a personal API token
(`Authorization: Bearer cfd_…`). The sign-in issue adds more ways to get a session
without changing the routes.
"""

from dataclasses import replace
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from confide.domain.actors import Actor, Via
from confide.domain.errors import Forbidden, NotAuthenticated, NotFound
from confide.runtime import Runtime
from confide.services import email_links, sessions
from confide.services.access import ensure_active
from confide.store.uow import unit_of_work

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def session_cookie_name(runtime: Runtime) -> str:
    # `__Host-` needs Secure; demo mode over plain http uses a plain name.
    return "__Host-confide_session" if runtime.settings.secure_cookies else "confide_session"


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _same_origin(request: Request, runtime: Runtime) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        # No Origin (browsers send one with every cross-origin POST, so this is rarely a
        # browser): still, only a JSON body or no body at all gets through. A cross-site
        # form always sends a form or text content type, and a JSON one needs a CORS
        # preflight, which this app never grants.
        ctype = request.headers.get("content-type", "")
        return not ctype or ctype.startswith("application/json")
    allowed = {runtime.settings.public_origin.rstrip("/")}
    host = request.headers.get("host")
    if host:
        allowed.add(f"{request.url.scheme}://{host}")
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" in allowed


def current_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """The signed-in actor. A session started from a portal link (PA6) reaches nothing
    here: it is refused like a route that does not exist (`conversation_actor` is the
    one dependency that accepts it)."""
    actor = _authenticate(request, runtime)
    if actor.via is Via.PORTAL_LINK:
        raise NotFound()
    return actor


def conversation_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """For reading and answering one conversation: every signed-in actor, and a portal
    link's session limited to its conversation (PA1, PA6; the service refuses the
    others, `access_conversation`)."""
    actor = _authenticate(request, runtime)
    if actor.via is not Via.PORTAL_LINK:
        return actor
    with unit_of_work(runtime.db, write=False) as uow:
        scope = email_links.link_session_scope(uow, request.state.session_id)
    return replace(actor, conversation_scope=scope)


def _authenticate(request: Request, runtime: Runtime) -> Actor:
    ip = client_ip(request)
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        with unit_of_work(runtime.db, write=False) as uow:
            actor = sessions.resolve_api_token(uow, auth[7:].strip(), ip=ip)
            ensure_active(uow, actor)
            return actor
    session_id = request.cookies.get(session_cookie_name(runtime))
    if not session_id or len(session_id) > 200:
        raise NotAuthenticated()
    if request.method in UNSAFE_METHODS and not _same_origin(request, runtime):
        raise Forbidden("csrf_failed", "This request did not come from Confide itself.")
    with unit_of_work(runtime.db, write=False) as uow:
        check = sessions.check_session(uow, session_id, runtime.session_policy, ip=ip)
        if check.actor is not None and not check.expired:
            ensure_active(uow, check.actor)
    if check.expired or check.stale:
        with unit_of_work(runtime.db, write=True) as uow:
            sessions.refresh_session(uow, session_id, check)
    if check.actor is None or check.expired:
        raise NotAuthenticated()
    request.state.session_id = session_id
    return check.actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
ConversationActor = Annotated[Actor, Depends(conversation_actor)]


def origin_allowed_for_form(request: Request, runtime: Runtime) -> bool:
    """A form POST of our own pages (email links): the browser's Origin must be ours.
    A request without Origin is refused here (every current browser sends it with a
    form POST), unlike the JSON API's rule."""
    if request.headers.get("origin") is None:
        return False
    return _same_origin(request, runtime)
