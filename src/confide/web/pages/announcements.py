"""Announcements (AN1, plus plan) in the web app, over the same service as the JSON API
(web/api/announcements.py).

- Team: `/announcements` lists what was sent (every announcement for the account owner
  and practice managers, one's own for others) and, for those allowed, a form: the
  account owner and practice managers write to all active clients, a clinician to their
  own active clients. The service decides; the page only offers what a person may use.
- Clients and contacts: `/portal/announcements`, what they received, newest first.
  There is no reply: an announcement is not a conversation.
- The email alert (NT1) goes out through the notification jobs (jobs/notify.py).
Every list is audited by the service (`announcements.viewed`).
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from confide.domain import policy
from confide.domain.announcements import Audience
from confide.domain.text import MAX_MESSAGE_CHARS
from confide.services import announcements
from confide.services.access import acting_client_side, acting_member, load_practice
from confide.web.deps import RuntimeDep
from confide.web.pages.common import Csrf, PageActor, client_nav, go, member_nav, render

router = APIRouter(include_in_schema=False)
PAGE = 20
Before = Query(None, ge=1, le=2**62)


@router.get("/announcements")
def team_page(
    request: Request, actor: PageActor, runtime: RuntimeDep, before: int | None = Before
) -> Response:
    with runtime.write() as uow:
        nav = member_nav(uow, actor)
        me = acting_member(uow, actor).member
        practice = load_practice(uow, actor)
        views = announcements.list_announcements(uow, actor, before_id=before, limit=PAGE)
    audiences = [
        a
        for a in (Audience.ALL_CLIENTS, Audience.MY_CLIENTS)
        if policy.may_send_announcement(practice, me, to_all_clients=a is Audience.ALL_CLIENTS)
    ]
    return render(
        request,
        "announcements.html",
        nav=nav,
        active="announcements",
        views=views,
        audiences=[a.value for a in audiences],
        plus=practice.plan.value == "plus",
        max_chars=MAX_MESSAGE_CHARS,
        next_before=views[-1].announcement.id if len(views) == PAGE else None,
        sent=request.query_params.get("sent") == "1",
    )


@router.post("/announcements", dependencies=[Csrf])
def send(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    audience: Annotated[Literal["all_clients", "my_clients"], Form()],
    text: Annotated[str, Form(max_length=MAX_MESSAGE_CHARS * 4)],
) -> Response:
    """AN1: to all active clients (owner, managers) or one's own (a clinician)."""
    with runtime.write() as uow:
        announcements.send_announcement(uow, actor, audience=Audience(audience), text=text)
    return go(request, "/announcements?sent=1")


@router.get("/portal/announcements")
def portal_page(
    request: Request, actor: PageActor, runtime: RuntimeDep, before: int | None = Before
) -> Response:
    """What this client (or their contact) received. No replies (AN1)."""
    with runtime.write() as uow:
        acting_client_side(uow, actor)  # team members: 404 (PM7)
        nav = client_nav(uow, actor)
        views = announcements.list_announcements(uow, actor, before_id=before, limit=PAGE)
    return render(
        request,
        "portal_announcements.html",
        nav=nav,
        active="announcements",
        views=views,
        next_before=views[-1].announcement.id if len(views) == PAGE else None,
    )
