"""Request dependencies: the runtime, units of work, and the current actor.

Authentication has one seam, `current_actor`: a session cookie or a personal API token
(`Authorization: Bearer cfd_…`). The sign-in issue adds more ways to get a session
without changing the routes.
"""

from dataclasses import dataclass, replace
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.responses import Response

from confide.domain.actors import Actor, Via
from confide.domain.errors import Forbidden, NotAuthenticated, NotFound
from confide.runtime import Runtime
from confide.services import email_links, sessions
from confide.services.access import ensure_active
from confide.store.uow import UnitOfWork, unit_of_work

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def session_cookie_name(runtime: Runtime) -> str:
    # `__Host-` needs Secure; demo mode over plain http uses a plain name.
    return "__Host-confide_session" if runtime.settings.secure_cookies else "confide_session"


def forget_session_cookie(response: Response, runtime: Runtime) -> None:
    """The browser drops its session cookie (sign-out, sign out everywhere)."""
    response.delete_cookie(
        session_cookie_name(runtime),
        path="/",
        secure=runtime.settings.secure_cookies,
        httponly=True,
    )


def signin_cookie_name(runtime: Runtime) -> str:
    """The pending step of a two-step sign-in (not a session: it opens nothing else)."""
    return "__Host-confide_signin" if runtime.settings.secure_cookies else "confide_signin"


async def get_runtime(request: Request) -> Runtime:
    """`async`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop
    (~8 % of the send path's CPU) for reading an attribute."""
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


def _enroll_first() -> Forbidden:
    return Forbidden(
        "second_factor_enrollment_required",
        "Your practice requires a second factor: set it up before anything else.",
    )


def current_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """The signed-in actor. A session started from a portal link (PA6) reaches nothing
    here: it is refused like a route that does not exist (`conversation_actor` is the
    one dependency that accepts it)."""
    actor = _authenticate(request, runtime, enrolling=False)
    if actor.via is Via.PORTAL_LINK:
        raise NotFound()
    return actor


def enrolling_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """`current_actor` for the few routes a member who must first enroll a second
    factor (PA4) may use: who am I, the second-factor enrollment, signing out."""
    actor = _authenticate(request, runtime, enrolling=True)
    if actor.via is Via.PORTAL_LINK:
        raise NotFound()
    return actor


def conversation_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """For reading and answering one conversation: every signed-in actor, and a portal
    link's session limited to its conversation (PA1, PA6; the service refuses the
    others, `access_conversation`)."""
    actor = _authenticate(request, runtime, enrolling=False)
    if actor.via is not Via.PORTAL_LINK:
        return actor
    with unit_of_work(runtime.db, write=False) as uow:
        return _link_scoped(uow, actor, request.state.session_id)


def signing_out_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """Anyone with a session may end it: a portal link's session (PA6) and a member who
    still has to enroll a second factor (PA4) too."""
    return _authenticate(request, runtime, enrolling=True)


def _authenticate(request: Request, runtime: Runtime, *, enrolling: bool) -> Actor:
    creds = credentials(request, runtime)
    if creds.token is not None:
        with unit_of_work(runtime.db, write=False) as uow:
            return _token_actor(uow, creds.token, creds.ip, enrolling=enrolling)
    session_id = creds.session_id or ""
    with unit_of_work(runtime.db, write=False) as uow:
        check = _session_check(uow, session_id, creds.ip, runtime)
    if check.expired or check.stale:
        with unit_of_work(runtime.db, write=True) as uow:
            sessions.refresh_session(uow, session_id, check)
    actor = _session_actor(check, enrolling=enrolling)
    request.state.session_id = session_id
    return actor


def _token_actor(uow: UnitOfWork, token: str, ip: str | None, *, enrolling: bool) -> Actor:
    actor = sessions.resolve_api_token(uow, token, ip=ip)
    ensure_active(uow, actor)
    if not enrolling and sessions.must_enroll(uow, actor):
        raise _enroll_first()
    return actor


def _session_check(
    uow: UnitOfWork, session_id: str, ip: str | None, runtime: Runtime
) -> sessions.SessionCheck:
    check = sessions.check_session(uow, session_id, runtime.session_policy, ip=ip)
    if check.actor is not None and not check.expired:
        ensure_active(uow, check.actor)
    return check


def _session_actor(check: sessions.SessionCheck, *, enrolling: bool) -> Actor:
    if check.actor is None or check.expired:
        raise NotAuthenticated()
    if check.must_enroll and not enrolling:
        raise _enroll_first()
    return check.actor


def _link_scoped(uow: UnitOfWork, actor: Actor, session_id: str) -> Actor:
    scope = email_links.link_session_scope(uow, session_id)
    return replace(actor, conversation_scope=scope)


CurrentActor = Annotated[Actor, Depends(current_actor)]
EnrollingActor = Annotated[Actor, Depends(enrolling_actor)]
ConversationActor = Annotated[Actor, Depends(conversation_actor)]
SigningOutActor = Annotated[Actor, Depends(signing_out_actor)]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents, read without the database: an API token or a session
    id (already past the CSRF check). `authenticate` turns it into an actor."""

    token: str | None
    session_id: str | None
    ip: str | None


def credentials(request: Request, runtime: Runtime) -> Credentials:
    ip = client_ip(request)
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return Credentials(auth[7:].strip(), None, ip)
    session_id = request.cookies.get(session_cookie_name(runtime))
    if not session_id or len(session_id) > 200:
        raise NotAuthenticated()
    if request.method in UNSAFE_METHODS and not _same_origin(request, runtime):
        raise Forbidden("csrf_failed", "This request did not come from Confide itself.")
    return Credentials(None, session_id, ip)


def authenticate(uow: UnitOfWork, creds: Credentials, runtime: Runtime) -> Actor:
    """`conversation_actor`'s rules inside a write unit of work that the caller goes on
    using: for the send path, which authenticates in its group's transaction
    (store/group.py) instead of paying a thread hop and a transaction of its own. An
    expired session is ended (and audited, committed: a group command ends there) even
    though the request is refused; a live session's idle timer moves with the caller's
    commit."""
    if creds.token is not None:
        return _token_actor(uow, creds.token, creds.ip, enrolling=False)
    session_id = creds.session_id or ""
    check = _session_check(uow, session_id, creds.ip, runtime)
    if check.expired or check.stale:
        sessions.refresh_session(uow, session_id, check, commit=False)
    actor = _session_actor(check, enrolling=False)
    if actor.via is Via.PORTAL_LINK:
        return _link_scoped(uow, actor, session_id)
    return actor


def origin_allowed_for_form(request: Request, runtime: Runtime) -> bool:
    """A form POST of our own pages (email links): the browser's Origin must be ours.
    A request without Origin is refused here (every current browser sends it with a
    form POST), unlike the JSON API's rule."""
    if request.headers.get("origin") is None:
        return False
    return _same_origin(request, runtime)
