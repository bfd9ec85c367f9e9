"""Conversations and messages (PM1-PM8, MS1-MS8)."""

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from confide.domain.actors import Party
from confide.domain.entities import Conversation
from confide.domain.text import suggest_emoji_codes
from confide.runtime import Runtime
from confide.services import messaging, reading
from confide.services.directory import PartyInfo, describe
from confide.store.uow import UnitOfWork
from confide.web.api.schemas import (
    ConversationListOut,
    ConversationOut,
    ConversationPageOut,
    EmojiOut,
    EmojiSearchIn,
    EmojiSuggestion,
    ErrorOut,
    MessageOut,
    PartyOut,
    PathId,
    ReadIn,
    RecipientSearchIn,
    RecipientsOut,
    SendIn,
    SentOut,
    StartConversationIn,
    UnreadOut,
)
from confide.web.deps import (
    CurrentActor,
    RuntimeDep,
    authenticate,
    credentials,
    one_thread_hop,
    signed_in,
)
from confide.web.ratelimit import SendingActor, send_limiter

router = APIRouter(tags=["messages"])
JSON = "application/json"


def _conversation(c: Conversation, people: dict[Party, PartyInfo], unread: int) -> ConversationOut:
    return ConversationOut(
        id=c.id,
        client_id=c.client_id,
        participants=[PartyOut.of(people[p.party]) for p in c.participants if p.party in people],
        last_seq=c.last_seq,
        last_activity_at=c.last_activity_at,
        unread=unread,
    )


def _sent(result: messaging.Sent) -> SentOut:
    """The answer to a send, from what the service loaded inside its transaction."""
    people = {result.message.sender: result.sender}
    return SentOut(
        conversation_id=result.conversation.id,
        message=MessageOut.of(result.message, people),
        created=result.created,
    )


def _rendered(answer: BaseModel, status_code: int = 200) -> Response:
    """The answer as JSON, rendered from its model where it was made. Returned as the
    model, FastAPI would dump it, validate the dump against the route's response model
    again and encode it, on the event loop; the routes that use this declare
    `response_model`, so the OpenAPI description is the same."""
    return Response(answer.model_dump_json(), status_code=status_code, media_type=JSON)


@router.get("/conversations", response_model=ConversationListOut)
@one_thread_hop
def list_conversations(
    request: Request,
    runtime: RuntimeDep,
    limit: int = Query(50, ge=1, le=100),
) -> Response:
    """MS8: latest activity first, with unread counts (MS7)."""
    with signed_in(request, runtime) as (uow, actor):
        items = reading.list_conversations(uow, actor, limit=limit)
        out = ConversationListOut(
            conversations=[_conversation(i.conversation, i.people, i.unread) for i in items]
        )
    return _rendered(out)


@router.post(
    "/conversations",
    status_code=201,
    responses={
        200: {"model": SentOut, "description": "MS5 replay: the message stored the first time"},
        429: {"model": ErrorOut, "description": "T11: over the send rate; Retry-After"},
    },
)
def start_conversation(
    body: StartConversationIn, actor: SendingActor, runtime: RuntimeDep, response: Response
) -> SentOut:
    """Start a conversation with its first message. Replaying the same idempotency key
    answers 200 with the message stored the first time (MS5)."""
    with runtime.write() as uow:
        result = messaging.start_conversation(
            uow,
            actor,
            messaging.StartConversation(
                member_ids=tuple(body.member_ids),
                client_id=body.client_id,
                contact_id=body.contact_id,
                text=body.text,
                idempotency_key=body.idempotency_key,
            ),
        )
    if not result.created:
        response.status_code = 200
    return _sent(result)


@router.get("/conversations/{conversation_id}", response_model=ConversationPageOut)
@one_thread_hop
def open_conversation(
    conversation_id: PathId,
    request: Request,
    runtime: RuntimeDep,
    before_seq: int | None = Query(None, ge=1, le=2**31 - 1),
    after_seq: int | None = Query(None, ge=0, le=2**31 - 1),
    limit: int = Query(50, ge=1, le=100),
    mark_read: bool = True,
) -> Response:
    """A page of messages (newest by default; `before_seq` pages back). Opening a
    conversation reads it (MS7) and is audited (RC1)."""
    # Rendered in the worker thread (`_rendered`): up to 100 messages (docs/operations.md,
    # "How a screen's reads are served").
    with signed_in(request, runtime, write=True, portal_link=True) as (uow, actor):
        page = reading.open_conversation(
            uow,
            actor,
            conversation_id,
            before_seq=before_seq,
            after_seq=after_seq,
            limit=limit,
            mark_read=mark_read,
        )
        out = ConversationPageOut(
            conversation=_conversation(page.conversation, page.people, page.unread),
            messages=MessageOut.many(page.messages, page.people),
            has_older=page.has_older,
            may_reply=page.may_reply,
            reply_refusal=page.reply_refusal,
        )
    return _rendered(out)


@router.post(
    "/conversations/{conversation_id}/messages",
    status_code=201,
    response_model=SentOut,
    responses={
        200: {"model": SentOut, "description": "MS5 replay: the message stored the first time"},
        429: {"model": ErrorOut, "description": "T11: over the send rate; Retry-After"},
    },
)
async def send_message(conversation_id: PathId, body: SendIn, request: Request) -> Response:
    # The hot path: authentication and the send run as one command of a group commit
    # (store/group.py), in the writer's thread; the answer goes out once the group is
    # committed. No dependencies beyond the path and the body, and the answer is
    # rendered here from its model: FastAPI would validate it against the model again
    # (docs/operations.md, "How a message is written").
    runtime: Runtime = request.app.state.runtime
    creds = credentials(request, runtime)
    admitted = send_limiter(request).admit_credentials(creds)  # T11: 429 before queueing
    cmd = messaging.SendMessage(
        conversation_id=conversation_id, text=body.text, idempotency_key=body.idempotency_key
    )

    def send(uow: UnitOfWork) -> messaging.Sent:
        return messaging.send_message(uow, authenticate(uow, creds, runtime, portal_link=True), cmd)

    result = await runtime.group.run(send)
    send_limiter(request).learn(admitted, result.conversation.practice_id, result.message.sender)
    return _rendered(_sent(result), 201 if result.created else 200)


@router.delete("/conversations/{conversation_id}/messages/{message_id}")
def remove_message(
    conversation_id: PathId, message_id: PathId, actor: CurrentActor, runtime: RuntimeDep
) -> MessageOut:
    """MS6: the sender removes a message; "This message was removed" shows in its place."""
    with runtime.write() as uow:
        msg = messaging.remove_message(uow, actor, conversation_id, message_id)
        return MessageOut.of(msg, describe(uow, actor.practice_id, [msg.sender]))


@router.post("/conversations/{conversation_id}/read")
@one_thread_hop
def mark_read(
    conversation_id: PathId, body: ReadIn, request: Request, runtime: RuntimeDep
) -> UnreadOut:
    with signed_in(request, runtime, write=True, portal_link=True) as (uow, actor):
        return UnreadOut(unread=reading.mark_read(uow, actor, conversation_id, seq=body.seq))


@router.get("/unread")
@one_thread_hop
def unread(request: Request, runtime: RuntimeDep) -> UnreadOut:
    """MS7: the total behind the red bubble."""
    with signed_in(request, runtime) as (uow, actor):
        return UnreadOut(unread=reading.unread_total(uow, actor))


@router.get("/recipients")
def recipients(
    actor: CurrentActor,
    runtime: RuntimeDep,
    limit: int = Query(20, ge=1, le=100),
) -> RecipientsOut:
    """MS8 "New message": recently messaged people, and everyone one may message (the
    name search is `POST /recipients/search`)."""
    with runtime.read() as uow:
        return _recipients(reading.search_recipients(uow, actor, limit=limit))


@router.post("/recipients/search")
def search_recipients(
    body: RecipientSearchIn, actor: CurrentActor, runtime: RuntimeDep
) -> RecipientsOut:
    """MS8 "New message": the name search, with the term in the body (never in a URL)."""
    with runtime.read() as uow:
        return _recipients(reading.search_recipients(uow, actor, q=body.q, limit=body.limit))


def _recipients(r: reading.Recipients) -> RecipientsOut:
    return RecipientsOut(
        recent=[PartyOut.of(p) for p in r.recent],
        members=[PartyOut.of(p) for p in r.members],
        clients=[PartyOut.of(p) for p in r.clients],
    )


@router.post("/emoji/search")
def emoji(body: EmojiSearchIn, actor: CurrentActor) -> EmojiOut:
    """MS2: emoji-code suggestions for the composer. The prefix is part of the message
    being typed, so it goes in the body, like every search term."""
    del actor
    return EmojiOut(
        suggestions=[EmojiSuggestion(code=c, emoji=e) for c, e in suggest_emoji_codes(body.prefix)]
    )
