"""The client portal (clients and contacts): their conversations, the thread, the
composer, starting a conversation with whom PM4 allows, the away banner (AW3).

Team members get the 404 of a page that does not exist here (`acting_client_side`).
"""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from confide.domain.actors import PartyKind
from confide.domain.errors import InvalidInput
from confide.domain.text import MAX_MESSAGE_CHARS
from confide.services import messaging, reading
from confide.services.access import acting_client_side
from confide.web.api.schemas import PathId
from confide.web.deps import RuntimeDep
from confide.web.pages import threads
from confide.web.pages.common import Csrf, PageActor, client_nav, go, new_key, parse_party, render
from confide.web.ratelimit import SendRate

router = APIRouter(include_in_schema=False)
BASE = "/portal"
Text = Annotated[str, Form(max_length=MAX_MESSAGE_CHARS * 4)]
Key = Annotated[str, Form(max_length=200)]


@router.get("/portal")
def inbox(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    with runtime.read() as uow:
        nav = client_nav(uow, actor)
        items = threads.conversation_items(uow, actor)
    return render(
        request, "messages.html", base=BASE, nav=nav, items=items, current=None, thread=None
    )


@router.get("/portal/list")
def inbox_fragment(
    request: Request, actor: PageActor, runtime: RuntimeDep, current: int = Query(0, ge=0, le=2**31)
) -> Response:
    with runtime.read() as uow:
        acting_client_side(uow, actor)
        items = threads.conversation_items(uow, actor)
    return render(request, "_conversations.html", base=BASE, items=items, current=current)


@router.get("/portal/new")
def new_message(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    """The team members this client may start a conversation with (PM4), and the composer."""
    with runtime.read() as uow:
        nav = client_nav(uow, actor)
        found = reading.search_recipients(uow, actor, limit=50)
    return render(
        request,
        "portal_new.html",
        nav=nav,
        base=BASE,
        members=found.members,
        key=new_key(),
        max_chars=MAX_MESSAGE_CHARS,
    )


@router.post("/portal/new", dependencies=[Csrf, SendRate])  # T11
def start(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    text: Annotated[str, Form(max_length=MAX_MESSAGE_CHARS * 4)],
    idempotency_key: Key,
    to: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    if not to:
        raise InvalidInput("invalid_recipient", "Choose who the message is for.")
    recipient = parse_party(to)
    if recipient.kind is not PartyKind.MEMBER:
        raise InvalidInput("invalid_recipient", "Choose who the message is for.")
    with runtime.write() as uow:
        acting_client_side(uow, actor)
        sent = messaging.start_conversation(
            uow,
            actor,
            messaging.StartConversation(
                member_ids=(recipient.id,), text=text, idempotency_key=idempotency_key
            ),
        )
    return go(request, f"{BASE}/{sent.conversation.id}")


@router.get("/portal/{conversation_id}")
def conversation(
    request: Request, conversation_id: PathId, actor: PageActor, runtime: RuntimeDep
) -> Response:
    with runtime.write() as uow:
        thread = threads.open_thread(uow, actor, conversation_id)
        nav = client_nav(uow, actor)  # after reading: the bubble counts what is left
        items = threads.conversation_items(uow, actor)
    return render(
        request, "messages.html", **threads.thread_context(BASE, nav, actor, items, thread)
    )


@router.get("/portal/{conversation_id}/since")
def since(
    request: Request,
    conversation_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    after: int = Query(0, ge=0, le=2**31),
    read: bool = True,
) -> Response:
    with runtime.write() as uow:
        acting_client_side(uow, actor)
        thread = threads.open_thread(uow, actor, conversation_id, after_seq=after, mark_read=read)
    return render(
        request, "_messages.html", thread=thread, me=actor.party, base=BASE, can_remove=False
    )


@router.get("/portal/{conversation_id}/older")
def older(
    request: Request,
    conversation_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    before: int = Query(..., ge=1, le=2**31),
) -> Response:
    """The page of messages before `before` ("Show older messages"); reads nothing."""
    with runtime.write() as uow:
        acting_client_side(uow, actor)
        thread = threads.open_thread(uow, actor, conversation_id, before_seq=before)
    return render(
        request, "_older.html", thread=thread, me=actor.party, base=BASE, can_remove=False
    )


@router.get("/portal/{conversation_id}/head")
def head(
    request: Request, conversation_id: PathId, actor: PageActor, runtime: RuntimeDep
) -> Response:
    """The header and the away banner (AW3), refreshed live when an away switch moves."""
    with runtime.write() as uow:
        acting_client_side(uow, actor)
        thread = threads.open_thread(
            uow, actor, conversation_id, after_seq=2**31 - 1, mark_read=False
        )
    return render(request, "_thread_head.html", thread=thread, base=BASE, portal=True)


@router.post("/portal/{conversation_id}/send", dependencies=[Csrf, SendRate])  # T11
def send(
    request: Request,
    conversation_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    text: Text,
    idempotency_key: Key,
) -> Response:
    with runtime.write() as uow:
        acting_client_side(uow, actor)
        return threads.send(request, uow, actor, BASE, conversation_id, text, idempotency_key)
