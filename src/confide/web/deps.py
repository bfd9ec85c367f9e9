"""Request dependencies: the runtime, units of work, and the current actor.

Authentication has one seam, `current_actor`: a session cookie or a personal API token
(`Authorization: Bearer cfd_…`). The sign-in issue adds more ways to get a session
without changing the routes.
"""

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Annotated, ParamSpec, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from confide.domain.actors import Actor, Via
from confide.domain.errors import Forbidden, NotAuthenticated, NotFound
from confide.runtime import Runtime
from confide.services import email_links, sessions
from confide.services.access import ensure_active
from confide.store.uow import UnitOfWork, unit_of_work

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

P = ParamSpec("P")
R = TypeVar("R")


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
    here: it is refused like a route that does not exist (`signed_in(...,
    portal_link=True)` accepts it, for the routes of its one conversation)."""
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
    request.state.session_id = session_id  # sign-out ends this session (api/auth.py)
    return actor


def _token_actor(uow: UnitOfWork, token: str, ip: str | None, *, enrolling: bool) -> Actor:
    check = sessions.resolve_api_token(uow, token, ip=ip)
    ensure_active(uow, check.actor)
    if not enrolling and check.must_enroll:
        raise _enroll_first()
    return check.actor


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


def authenticate(
    uow: UnitOfWork, creds: Credentials, runtime: Runtime, *, portal_link: bool
) -> Actor:
    """`current_actor`'s rules inside a write unit of work that the caller goes on
    using, for the send path (which authenticates in its group's transaction,
    store/group.py) and `signed_in`'s write routes: no thread hop and no transaction of
    its own. `portal_link=True` for the routes of one conversation: a portal link's
    session is accepted too, limited to its conversation (PA1, PA6:
    `access_conversation` refuses the others). An expired session is ended (and
    audited, committed: a group command ends there) even though the request is
    refused; a live session's idle timer moves with the caller's commit."""
    if creds.token is not None:
        return _token_actor(uow, creds.token, creds.ip, enrolling=False)
    session_id = creds.session_id or ""
    check = _session_check(uow, session_id, creds.ip, runtime)
    if check.expired or check.stale:
        sessions.refresh_session(uow, session_id, check, commit=False)
    return _live_actor(uow, check, session_id, portal_link=portal_link)


def _live_actor(
    uow: UnitOfWork, check: sessions.SessionCheck, session_id: str, *, portal_link: bool
) -> Actor:
    actor = _session_actor(check, enrolling=False)
    if actor.via is not Via.PORTAL_LINK:
        return actor
    if not portal_link:
        raise NotFound()
    return _link_scoped(uow, actor, session_id)


@contextmanager
def signed_in(
    request: Request, runtime: Runtime, *, write: bool = False, portal_link: bool = False
) -> Iterator[tuple[UnitOfWork, Actor]]:
    """The route's unit of work and its actor, authenticated in that same transaction:
    `current_actor`'s rules, or with `portal_link=True` `authenticate`'s. For the
    routes a screen asks for all the time (a conversation's page, the list, the red
    bubble): the dependencies cost a thread hop and a transaction of their own, about a
    quarter of such a request's server time (docs/operations.md).

    A read transaction cannot move a session's idle timer: when it is due to move
    (`stale`, at most once a minute) a write transaction does so after the route's
    work; an expired session is ended in one and the request refused, as
    `current_actor` does."""
    creds = credentials(request, runtime)
    if write:
        with unit_of_work(runtime.db, write=True) as uow:
            yield uow, authenticate(uow, creds, runtime, portal_link=portal_link)
        return
    session_id = creds.session_id or ""
    check: sessions.SessionCheck | None = None
    try:
        with unit_of_work(runtime.db, write=False) as uow:
            if creds.token is not None:
                actor = _token_actor(uow, creds.token, creds.ip, enrolling=False)
            else:
                check = _session_check(uow, session_id, creds.ip, runtime)
                if check.expired:
                    raise NotAuthenticated()
                actor = _live_actor(uow, check, session_id, portal_link=portal_link)
            yield uow, actor
    finally:
        if check is not None and (check.expired or check.stale):
            with unit_of_work(runtime.db, write=True) as uow:
                sessions.refresh_session(uow, session_id, check)


def one_thread_hop(route: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """A blocking route as an `async` one that runs its body in the thread pool. FastAPI
    runs a plain `def` route in the pool and then hops again to check its answer
    against the response model (`serialize_response` with `is_coroutine=False`); an
    `async` route's answer is checked on the event loop. For the routes of
    `signed_in`, with it: one thread hop per request instead of three. FastAPI reads
    the parameters and the response model from `route` (`functools.wraps`)."""

    @functools.wraps(route)
    async def endpoint(*args: P.args, **kwargs: P.kwargs) -> R:
        return await run_in_threadpool(route, *args, **kwargs)

    return endpoint


def origin_allowed_for_form(request: Request, runtime: Runtime) -> bool:
    """A form POST of our own pages (email links): the browser's Origin must be ours.
    A request without Origin is refused here (every current browser sends it with a
    form POST), unlike the JSON API's rule."""
    if request.headers.get("origin") is None:
        return False
    return _same_origin(request, runtime)
