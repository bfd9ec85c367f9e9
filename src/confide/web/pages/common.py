"""What every page shares: who is signed in, the navigation facts, answers for htmx
and for plain browser requests, and the page error handler."""

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.errors import Forbidden, InvalidInput, NotFound
from confide.services import reading
from confide.services.access import acting_client_side, acting_member, load_practice
from confide.store.uow import UnitOfWork
from confide.web import csrf, templating
from confide.web.deps import current_actor, session_cookie_name
from confide.web.templating import PAGE_HEADERS

PageActor = Annotated[Actor, Depends(current_actor)]
# A state-changing page request: the CSRF token, then the session (and its Origin check).
Csrf = Depends(csrf.require_csrf)

ENROLL_FIRST = "second_factor_enrollment_required"
NOT_FOUND_TEXT = "This page does not exist, or it is not available to you."


@dataclass(frozen=True)
class Nav:
    """The top navigation: the signed-in person, the red bubble (MS7), "(Away)" (AW1)."""

    kind: str  # "member" or "client"
    party: str  # "member:5": live.js compares away events with it
    name: str
    unread: int
    away: bool = False
    practice: str = ""
    settings: bool = False  # may open Settings (every team member: Notifications, Security)
    export: bool = False  # Settings > Data export (EX1)
    audit: bool = False  # Settings > Audit log (RC1)
    announce: bool = False  # Announcements (AN1, plus plan)


def member_nav(uow: UnitOfWork, actor: Actor) -> Nav:
    me = acting_member(uow, actor).member
    p = load_practice(uow, actor)
    export = bool(policy.may_export(me))
    audit = bool(policy.may_view_audit_log(me))
    return Nav(
        "member",
        str(actor.party),
        me.name,
        _unread(uow, actor),
        me.away_on,
        p.name,
        True,  # every member has Settings: Notifications and Security are their own
        export=export,
        audit=audit,
        announce=bool(policy.may_send_announcement(p, me, to_all_clients=False)),
    )


def _unread(uow: UnitOfWork, actor: Actor) -> int:
    try:
        return reading.unread_total(uow, actor)
    except Forbidden:  # a plan without messaging (PL1): no bubble, the page still works
        return 0


def client_nav(uow: UnitOfWork, actor: Actor) -> Nav:
    client, contact = acting_client_side(uow, actor)
    who = contact if contact is not None else client
    # A portal link's session (PA6) reaches its one conversation only.
    return Nav(
        "client",
        str(actor.party),
        who.name,
        _unread(uow, actor),
        announce=actor.via is not Via.PORTAL_LINK,
    )


# Sent when a session ends (sign-out, sign out everywhere, a request of an expired one):
# the browser drops its HTTP cache, storage, Cache Storage and service workers of this
# origin. Not cookies: the pre-session CSRF cookie of the sign-in form stays.
CLEAR_SITE_DATA = '"cache", "storage"'


def had_session(request: Request) -> bool:
    runtime = request.app.state.runtime
    return bool(request.cookies.get(session_cookie_name(runtime)))


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def go(request: Request, url: str) -> Response:
    """After a POST: htmx follows HX-Redirect; a plain form follows 303."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url, **PAGE_HEADERS})
    return RedirectResponse(url, status_code=303, headers=PAGE_HEADERS)


def new_key() -> str:
    """An idempotency key for one composer (MS5): a resent form stores one message."""
    return uuid.uuid4().hex


def parse_party(text: str) -> Party:
    """`member:5`, `client:7`, `contact:3` from a form or a query (recipients)."""
    kind, _, raw = text.partition(":")
    if kind not in ("member", "client", "contact") or not raw.isdigit() or len(raw) > 12:
        raise InvalidInput("invalid_recipient", "Choose who the message is for.")
    return Party(PartyKind(kind), int(raw))


def render(request: Request, name: str, status_code: int = 200, /, **ctx: Any) -> Response:
    return templating.render(request, name, status_code, **ctx)


def page_error(request: Request, status: int, code: str, message: str) -> Response:
    """Errors of page routes: HTML for people, short text for htmx (shown in the page's
    alert region), a redirect to sign-in when the session is gone. Missing and
    forbidden are the same answer (PM7)."""
    if status == 404:
        message = NOT_FOUND_TEXT
    if code == ENROLL_FIRST:
        # PA4: the practice requires a second factor and this member has none yet:
        # the Security page (its enrollment) is the one place to go.
        if is_htmx(request):
            return Response(status_code=403, headers={"HX-Redirect": "/settings/security"})
        if request.method == "GET":
            return RedirectResponse("/settings/security", status_code=303)
    if status == 401:
        # The session is gone (ended, idle, expired) or never was: nothing of it may
        # stay in this browser (T15; the pages send no-store already).
        gone = {"Clear-Site-Data": CLEAR_SITE_DATA} if had_session(request) else {}
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": "/signin", **gone})
        if request.method == "GET":
            return RedirectResponse("/signin", status_code=303, headers=gone)
        message = "You are signed out. Sign in again."
    if is_htmx(request):
        return PlainTextResponse(message, status_code=status)
    return templating.render(
        request, "error.html", status, status=status, code=code, message=message
    )


__all__ = ["NotFound"]
