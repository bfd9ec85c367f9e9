"""The practice web app's Messages (MS1-MS8, EN5, AW1, AW2), for team members.

Clients and contacts get the 404 of a page that does not exist here (`acting_member`);
their pages are under /portal.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind
from confide.domain.errors import InvalidInput
from confide.domain.text import MAX_AWAY_CHARS, MAX_MESSAGE_CHARS
from confide.services import clients, messaging, reading, team
from confide.services.access import acting_member, load_practice
from confide.services.directory import PartyInfo, describe
from confide.store.uow import UnitOfWork
from confide.web.api.schemas import PathId
from confide.web.deps import RuntimeDep
from confide.web.pages import threads
from confide.web.pages.common import (
    Csrf,
    PageActor,
    go,
    is_htmx,
    member_nav,
    new_key,
    parse_party,
    render,
)
from confide.web.ratelimit import SendRate

router = APIRouter(include_in_schema=False)
BASE = "/messages"
Text = Annotated[str, Form(max_length=MAX_MESSAGE_CHARS * 4)]
Key = Annotated[str, Form(max_length=200)]


@router.get("/messages")
def inbox(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        items = threads.conversation_items(uow, actor)
    return render(
        request, "messages.html", base=BASE, nav=nav, items=items, current=None, thread=None
    )


@router.get("/messages/list")
def inbox_fragment(
    request: Request, actor: PageActor, runtime: RuntimeDep, current: int = Query(0, ge=0, le=2**31)
) -> Response:
    """The conversation list alone, for live updates."""
    with runtime.read() as uow:
        acting_member(uow, actor)
        items = threads.conversation_items(uow, actor)
    return render(request, "_conversations.html", base=BASE, items=items, current=current)


@router.get("/messages/new")
def new_message(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    to: str = Query("", max_length=40),
) -> Response:
    """MS8 "New message": recent people and a search; then the composer, or the
    "Enable secure messaging" step for a client whose messaging is off (EN5)."""
    with runtime.write() as uow:
        nav = member_nav(uow, actor)
        ctx: dict[str, object] = {
            "nav": nav,
            "base": BASE,
            "q": "",
            "searched": False,
            "key": new_key(),
            "max_chars": MAX_MESSAGE_CHARS,
        }
        if not to:
            ctx["found"] = reading.search_recipients(uow, actor, limit=20)
            return render(request, "new_message.html", recipient=None, **ctx)
        recipient = parse_party(to)
        ctx.update(_recipient_step(uow, actor, recipient))
    return render(request, "new_message.html", found=None, **ctx)


@router.post("/messages/new/search", dependencies=[Csrf])
def new_message_search(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    q: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """MS8's name search, with the term in the form body (never in a URL): the results
    alone for htmx, the whole "New message" page for a plain form post."""
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        found = reading.search_recipients(uow, actor, q=q, limit=20)
    if is_htmx(request):
        return render(
            request, "_recipient_results.html", base=BASE, found=found, q=q, searched=True, oob=True
        )
    return render(
        request,
        "new_message.html",
        nav=nav,
        base=BASE,
        found=found,
        q=q,
        searched=True,
        recipient=None,
    )


def _recipient_step(uow: UnitOfWork, actor: Actor, recipient: Party) -> dict[str, object]:
    out: dict[str, object] = {"to": str(recipient), "enable": None, "blocked": ""}
    if recipient.kind is PartyKind.MEMBER:
        info = describe(uow, actor.practice_id, [recipient]).get(recipient)
        if info is None or recipient == actor.party:
            raise InvalidInput("invalid_recipient", "Choose who the message is for.")
        out["recipient"] = info
        return out
    contact = None
    if recipient.kind is PartyKind.CONTACT:
        contact = uow.people.get_contact(actor.practice_id, recipient.id)
        detail = clients.get_client(uow, actor, contact.client_id)  # NotFound without access
        label = f"Contact ({contact.relationship})" if contact.relationship else "Contact"
        name = contact.name
    else:
        detail = clients.get_client(uow, actor, recipient.id)  # NotFound without access (PM2)
        name, label = detail.client.name, "Client"
    decision = policy.client_side_may_message(load_practice(uow, actor), detail.client, contact)
    out["recipient"] = PartyInfo(recipient, name, label)
    if not decision:
        out["blocked"] = threads.refusal_text(decision.code)
        fixable = decision.code in (policy.CLIENT_MESSAGING_OFF, policy.NO_PORTAL_ACCESS)
        if fixable and contact is None and detail.may_edit:
            out["enable"] = detail.client.id
    return out


@router.post("/messages/new", dependencies=[Csrf, SendRate])  # T11
def start(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    to: Annotated[str, Form(max_length=40)],
    text: Text,
    idempotency_key: Key,
) -> Response:
    recipient = parse_party(to)
    cmd = messaging.StartConversation(
        member_ids=(recipient.id,) if recipient.kind is PartyKind.MEMBER else (),
        client_id=recipient.id if recipient.kind is PartyKind.CLIENT else None,
        contact_id=recipient.id if recipient.kind is PartyKind.CONTACT else None,
        text=text,
        idempotency_key=idempotency_key,
    )
    with runtime.write() as uow:
        acting_member(uow, actor)  # clients start theirs in the portal (PM4)
        sent = messaging.start_conversation(uow, actor, cmd)
    return go(request, f"{BASE}/{sent.conversation.id}")


@router.post("/messages/new/enable", dependencies=[Csrf])
def enable(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    client_id: Annotated[int, Form(ge=1, le=2**31)],
) -> Response:
    """EN5: "Enable secure messaging" (portal access and the client's own box)."""
    with runtime.write() as uow:
        clients.enable_client_messaging(uow, actor, client_id)
    return go(request, f"{BASE}/new?to=client:{client_id}")


@router.get("/messages/away")
def away_page(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    """AW1, AW2: the away switch and "Customize" (600 characters, with a counter)."""
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        me = acting_member(uow, actor).member
    return render(
        request, "away.html", nav=nav, me=me, max_away=MAX_AWAY_CHARS, error="", saved=False
    )


@router.post("/messages/away", dependencies=[Csrf])
def set_away(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    on: Annotated[str, Form(max_length=5)] = "",
    text: Annotated[str | None, Form(max_length=MAX_AWAY_CHARS * 4)] = None,
    back: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if on not in ("", "on", "off"):
        raise InvalidInput("invalid_input", "The away switch is on or off.")
    try:
        with runtime.write() as uow:
            team.set_away(uow, actor, on=None if not on else on == "on", text=text)
    except InvalidInput as exc:
        if is_htmx(request):
            raise
        with runtime.read() as uow:
            nav = member_nav(uow, actor)
            me = acting_member(uow, actor).member
        return render(
            request,
            "away.html",
            422,
            nav=nav,
            me=me,
            max_away=MAX_AWAY_CHARS,
            error=exc.message,
            saved=False,
        )
    target = back if back.startswith("/messages") and "//" not in back else f"{BASE}/away?saved=1"
    return go(request, target)


@router.get("/messages/{conversation_id}")
def conversation(
    request: Request, conversation_id: PathId, actor: PageActor, runtime: RuntimeDep
) -> Response:
    with runtime.write() as uow:
        thread = threads.open_thread(uow, actor, conversation_id)
        nav = member_nav(uow, actor)
        items = threads.conversation_items(uow, actor)
    return render(
        request, "messages.html", **threads.thread_context(BASE, nav, actor, items, thread)
    )


@router.get("/messages/{conversation_id}/since")
def since(
    request: Request,
    conversation_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    after: int = Query(0, ge=0, le=2**31),
    read: bool = True,
) -> Response:
    """New messages after `after`, for live updates (reading them moves the read position)."""
    with runtime.write() as uow:
        acting_member(uow, actor)
        thread = threads.open_thread(uow, actor, conversation_id, after_seq=after, mark_read=read)
    return render(
        request, "_messages.html", thread=thread, me=actor.party, base=BASE, can_remove=True
    )


@router.get("/messages/{conversation_id}/older")
def older(
    request: Request,
    conversation_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    before: int = Query(..., ge=1, le=2**31),
) -> Response:
    """The page of messages before `before` ("Show older messages"); reads nothing."""
    with runtime.write() as uow:
        acting_member(uow, actor)
        thread = threads.open_thread(uow, actor, conversation_id, before_seq=before)
    return render(request, "_older.html", thread=thread, me=actor.party, base=BASE, can_remove=True)


@router.get("/messages/{conversation_id}/head")
def head(
    request: Request, conversation_id: PathId, actor: PageActor, runtime: RuntimeDep
) -> Response:
    with runtime.write() as uow:
        acting_member(uow, actor)
        thread = threads.open_thread(
            uow, actor, conversation_id, after_seq=2**31 - 1, mark_read=False
        )
    return render(request, "_thread_head.html", thread=thread, base=BASE, portal=False)


@router.post("/messages/{conversation_id}/send", dependencies=[Csrf, SendRate])  # T11
def send(
    request: Request,
    conversation_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    text: Text,
    idempotency_key: Key,
) -> Response:
    with runtime.write() as uow:
        acting_member(uow, actor)
        return threads.send(request, uow, actor, BASE, conversation_id, text, idempotency_key)


@router.post("/messages/{conversation_id}/remove/{message_id}", dependencies=[Csrf])
def remove(
    request: Request,
    conversation_id: PathId,
    message_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
) -> Response:
    """MS6: the trash icon, after confirmation; "This message was removed" in its place."""
    with runtime.write() as uow:
        msg = messaging.remove_message(uow, actor, conversation_id, message_id)
        people = describe(uow, actor.practice_id, [msg.sender])
    if not is_htmx(request):
        return go(request, f"{BASE}/{conversation_id}")
    return render(
        request,
        "_message.html",
        m=msg,
        people=people,
        me=actor.party,
        base=BASE,
        can_remove=True,
        thread_id=conversation_id,
    )
