"""The client overview for team members: the client list (those they have access to)
and one client: Edit > Client portal (portal access, "Use secure messaging", EN3/EN6),
contacts with their own portal access and messaging box, access grants (managers),
and a Messages tab, the link to the transcripts and the chart notes (TR1, TR2, records.py).
Viewing a client is audited (`clients.get_client`, RC1), and so is reading its chart
notes (`chart_notes.list_chart_notes`)."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from confide.domain import policy
from confide.domain.entities import Member, Role
from confide.services import chart_notes, clients, practice, team
from confide.services.access import acting_member
from confide.web.api.schemas import PathId
from confide.web.deps import RuntimeDep
from confide.web.pages.common import Csrf, PageActor, go, is_htmx, member_nav, render

router = APIRouter(include_in_schema=False)
Flag = Annotated[str, Form(max_length=5)]
NOTES_PAGE = 20


SearchTerm = Annotated[str, Form(max_length=100)]


@router.get("/clients")
def client_list(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        found = clients.list_clients(uow, actor)
    return render(
        request, "clients.html", nav=nav, active="clients", clients=found, q="", searched=False
    )


@router.post("/clients/search", dependencies=[Csrf])
def client_search(
    request: Request, actor: PageActor, runtime: RuntimeDep, q: SearchTerm = ""
) -> Response:
    """The search of the client list, with the term in the form body (never in a URL):
    the results alone for htmx, the whole page for a plain form post."""
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        found = clients.list_clients(uow, actor, q=q)
    if is_htmx(request):
        return render(request, "_client_results.html", clients=found, q=q, searched=True, oob=True)
    return render(
        request, "clients.html", nav=nav, active="clients", clients=found, q=q, searched=True
    )


@router.get("/clients/{client_id}")
def client_overview(
    request: Request,
    client_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    notes_before: int | None = Query(None, ge=1, le=2**62),
    noted: int | None = Query(None, ge=1, le=2**62),
) -> Response:
    with runtime.write() as uow:
        nav = member_nav(uow, actor)
        detail = clients.get_client(uow, actor, client_id)  # NotFound without access (PM2)
        me = acting_member(uow, actor).member
        members: dict[int, Member] = {m.id: m for m in team.list_members(uow, actor)}
        p = practice.get_practice(uow, actor)
        # TR2: the chart notes on the record (those with access to the client; audited).
        notes = chart_notes.list_chart_notes(
            uow, actor, client_id, limit=NOTES_PAGE, before_id=notes_before
        )
    may_grant = bool(policy.may_grant_client_access(me))
    # Whom a grant would change anything for: active clinicians and supervisors who do
    # not already see every client and are not the primary clinician.
    grantable = [
        m
        for m in members.values()
        if m.active
        and (m.is_clinician or m.has(Role.SUPERVISOR))
        and not policy.sees_every_client(m)
        and m.id != detail.client.primary_clinician_id
    ]
    return render(
        request,
        "client.html",
        nav=nav,
        active="clients",
        detail=detail,
        c=detail.client,
        practice=p,
        primary=members.get(detail.client.primary_clinician_id or 0),
        members=members,
        may_grant=may_grant,
        grantable=grantable,
        saved=request.query_params.get("saved") == "1",
        notes=notes,
        notes_before=notes_before,
        notes_next=notes[-1].note.id if len(notes) == NOTES_PAGE else None,
        noted=noted is not None,
    )


@router.post("/clients/{client_id}/portal", dependencies=[Csrf])
def set_portal(
    request: Request,
    client_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    portal_access: Flag = "",
    messaging_enabled: Flag = "",
) -> Response:
    """EN3/EN6: turning either off ends the client's reading and sending at once."""
    with runtime.write() as uow:
        clients.set_client_messaging(
            uow,
            actor,
            client_id,
            portal_access=portal_access == "on",
            messaging_enabled=messaging_enabled == "on",
        )
    return go(request, f"/clients/{client_id}?saved=1")


@router.post("/clients/{client_id}/contacts", dependencies=[Csrf])
def add_contact(
    request: Request,
    client_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    name: Annotated[str, Form(max_length=400)],
    email: Annotated[str, Form(max_length=320)] = "",
    relationship: Annotated[str, Form(max_length=400)] = "",
    portal_access: Flag = "",
    messaging_enabled: Flag = "",
) -> Response:
    with runtime.write() as uow:
        clients.add_contact(
            uow,
            actor,
            client_id,
            name=name,
            email=email or None,
            relationship=relationship,
            portal_access=portal_access == "on",
            messaging_enabled=messaging_enabled == "on",
        )
    return go(request, f"/clients/{client_id}?saved=1")


@router.post("/contacts/{contact_id}/portal", dependencies=[Csrf])
def set_contact_portal(
    request: Request,
    contact_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    portal_access: Flag = "",
    messaging_enabled: Flag = "",
) -> Response:
    with runtime.write() as uow:
        contact = clients.set_contact_messaging(
            uow,
            actor,
            contact_id,
            portal_access=portal_access == "on",
            messaging_enabled=messaging_enabled == "on",
        )
    return go(request, f"/clients/{contact.client_id}?saved=1")


@router.post("/clients/{client_id}/access", dependencies=[Csrf])
def set_grant(
    request: Request,
    client_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    member_id: Annotated[int, Form(ge=1, le=2**62)],
    on: Flag = "",
) -> Response:
    """Granting (or ending) a clinician's or supervisor's access to this client."""
    with runtime.write() as uow:
        clients.set_client_access_grant(uow, actor, client_id, member_id, on=on == "on")
    return go(request, f"/clients/{client_id}?saved=1")
