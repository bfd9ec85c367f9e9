"""Starting conversations, sending and removing messages (PM1-PM6, MS1, MS2, MS5, MS6).

Every write: policy, change, audit row and outbox row, one transaction. The outbox
payloads carry ids only; the realtime relay loads what each recipient may see.
"""

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from confide.domain import policy
from confide.domain.actors import Actor, Party
from confide.domain.entities import Client, Contact, Conversation, MemberFacts, Message
from confide.domain.errors import Conflict, InvalidInput, NotFound
from confide.domain.policy import StartRequest
from confide.domain.text import prepare_message_text
from confide.services import notifications
from confide.services.access import (
    access_conversation,
    acting_client_side,
    acting_member,
    load_practice,
    refuse,
    require,
    require_messaging_plan,
)
from confide.services.directory import PartyInfo, describe, member_info
from confide.store.uow import UnitOfWork

MAX_IDEMPOTENCY_KEY = 100
MAX_RECIPIENTS = 20


@dataclass(frozen=True)
class StartConversation:
    member_ids: tuple[int, ...]
    text: str
    idempotency_key: str
    client_id: int | None = None  # members only: the client the conversation is with
    contact_id: int | None = None  # members only: a contact of that client instead


@dataclass(frozen=True)
class SendMessage:
    conversation_id: int
    text: str
    idempotency_key: str


@dataclass(frozen=True)
class Sent:
    conversation: Conversation
    message: Message
    created: bool  # False when the idempotency key matched an earlier send (MS5)
    sender: PartyInfo  # loaded inside the transaction: the answer needs no second one


def _sender_info(uow: UnitOfWork, actor: Actor, me: MemberFacts | None = None) -> PartyInfo:
    if me is not None:
        return member_info(me.member)
    return describe(uow, actor.practice_id, [actor.party])[actor.party]


def _check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInput(
            "invalid_idempotency_key", "The idempotency key must be 1 to 100 printable characters."
        )
    return key


def _replay(uow: UnitOfWork, actor: Actor, key: str, conversation_id: int | None) -> Sent | None:
    """MS5: the same key from the same sender stores one message."""
    earlier = uow.conversations.find_by_idempotency_key(actor.practice_id, actor.party, key)
    if earlier is None:
        return None
    if conversation_id is not None and earlier.conversation_id != conversation_id:
        raise Conflict(
            "idempotency_key_reused",
            "This idempotency key was already used for another conversation.",
        )
    conversation = uow.conversations.get_conversation(actor.practice_id, earlier.conversation_id)
    return Sent(conversation, earlier, created=False, sender=_sender_info(uow, actor))


def _record_sent(uow: UnitOfWork, actor: Actor, conversation: Conversation, msg: Message) -> None:
    uow.audit.record(
        actor, "message.sent", "message", msg.id, conversation_id=conversation.id, seq=msg.seq
    )
    uow.outbox.add(
        actor.practice_id,
        "message.created",
        conversation_id=conversation.id,
        message_id=msg.id,
        seq=msg.seq,
        sender=str(actor.party),
    )
    notifications.on_message_sent(uow, actor, conversation, msg)  # NT2, NT3 (jobs)


def _resolve_client_side(
    uow: UnitOfWork, actor: Actor, cmd: StartConversation
) -> tuple[Client | None, Contact | None]:
    if actor.is_client_side:
        if cmd.client_id is not None or cmd.contact_id is not None:
            raise InvalidInput(
                "invalid_input",
                "client_id and contact_id are for team members; a client writes for themselves.",
            )
        return acting_client_side(uow, actor)
    if cmd.contact_id is not None:
        contact = uow.people.get_contact(actor.practice_id, cmd.contact_id)
        if cmd.client_id is not None and cmd.client_id != contact.client_id:
            raise InvalidInput("contact_not_of_client", "This contact belongs to another client.")
        return uow.people.get_client(actor.practice_id, contact.client_id), contact
    if cmd.client_id is not None:
        return uow.people.get_client(actor.practice_id, cmd.client_id), None
    return None, None


def start_conversation(uow: UnitOfWork, actor: Actor, cmd: StartConversation) -> Sent:
    """PM1-PM6: a new conversation with its first message.

    A conversation holds team members and at most one client side: the client or one
    of their contacts (PM6). Recipients the actor may not know exist answer NotFound.
    """
    key = _check_key(cmd.idempotency_key)
    text = prepare_message_text(cmd.text)
    if len(set(cmd.member_ids)) > MAX_RECIPIENTS:
        raise InvalidInput(
            "too_many_recipients", f"A conversation holds at most {MAX_RECIPIENTS} team members."
        )
    practice = load_practice(uow, actor)
    require_messaging_plan(practice)
    if (done := _replay(uow, actor, key, None)) is not None:
        access_conversation(uow, actor, done.conversation.id)  # still theirs to read?
        return done
    client, contact = _resolve_client_side(uow, actor, cmd)
    member_ids = sorted(set(cmd.member_ids) - ({actor.party.id} if actor.is_member else set()))
    members = uow.people.facts_for(actor.practice_id, member_ids)
    if len(members) != len(member_ids):
        raise NotFound("team member")
    req = StartRequest(practice, tuple(members), client, contact)
    me: MemberFacts | None = None
    if actor.is_member:
        me = acting_member(uow, actor)
        if client is not None and not policy.has_client_access(me, client):
            raise NotFound("client")  # PM7: a client they cannot see does not exist
        decision = policy.may_member_start_conversation(me, req)
    else:
        decision = policy.may_client_start_conversation(req)
        if decision.code == policy.NOT_ALLOWED_TO_START:
            raise NotFound("team member")
    require(decision)
    parties: list[Party] = [m.member.party for m in members]
    if actor.is_member:
        parties.insert(0, actor.party)
    if contact is not None:
        parties.append(contact.party)
    elif client is not None:
        parties.append(client.party)
    try:
        conversation_id = uow.conversations.insert_conversation(
            actor.practice_id,
            client_id=client.id if client else None,
            started_by=actor.party,
            participants=parties,
        )
        msg = uow.conversations.append_message(
            actor.practice_id, conversation_id, sender=actor.party, text=text, idempotency_key=key
        )
        if msg is None:  # the same key, stored by a concurrent request first
            return _lost_race(uow, actor, key, None)
        conversation = uow.conversations.get_conversation(actor.practice_id, conversation_id)
        uow.audit.record(
            actor,
            "conversation.started",
            "conversation",
            conversation_id,
            client_id=client.id if client else None,
            participants=len(parties),
        )
        _record_sent(uow, actor, conversation, msg)
        sender = _sender_info(uow, actor, me)
        uow.commit()
    except IntegrityError:
        return _lost_race(uow, actor, key, None)
    return Sent(conversation, msg, created=True, sender=sender)


def _lost_race(uow: UnitOfWork, actor: Actor, key: str, conversation_id: int | None) -> Sent:
    """MS5: the key was used already (a retry, or a concurrent request that stored it
    first; the unique index says so): undo what this send did (its sequence number)
    and answer with the earlier message."""
    uow.rollback()
    done = _replay(uow, actor, key, conversation_id)
    if done is None:
        raise Conflict("concurrent_change", "Something changed at the same time. Try again.")
    return done


def send_message(uow: UnitOfWork, actor: Actor, cmd: SendMessage) -> Sent:
    """MS1, MS2, MS5; PM5 (clients reply indefinitely where a member with access
    started); EN1-EN3 checked at every send, not only at the start."""
    key = _check_key(cmd.idempotency_key)
    text = prepare_message_text(cmd.text)
    ctx = access_conversation(uow, actor, cmd.conversation_id)
    if ctx.me is not None:
        decision = policy.may_reply_as_member(ctx.me, ctx.view)
    else:
        decision = policy.may_reply_as_client(actor.party, ctx.view)
    if not decision:
        # A retry of a message stored before the refusal still gets its answer (MS5).
        if (done := _replay(uow, actor, key, ctx.conversation.id)) is not None:
            return done
        raise refuse(decision)
    try:
        # MS5 without a read first: the insert stores nothing when the key was used.
        msg = uow.conversations.append_message(
            actor.practice_id,
            ctx.conversation.id,
            sender=actor.party,
            text=text,
            idempotency_key=key,
        )
        if msg is None:
            return _lost_race(uow, actor, key, ctx.conversation.id)
        _record_sent(uow, actor, ctx.conversation, msg)
        sender = _sender_info(uow, actor, ctx.me)
        uow.commit()
    except IntegrityError:
        return _lost_race(uow, actor, key, ctx.conversation.id)
    return Sent(ctx.conversation, msg, created=True, sender=sender)


def remove_message(uow: UnitOfWork, actor: Actor, conversation_id: int, message_id: int) -> Message:
    """MS6: the sender (a team member) removes a message. Its text disappears from every
    view and API answer; the record keeps it for transcripts and exports (RC3)."""
    ctx = access_conversation(uow, actor, conversation_id)
    msg = uow.conversations.get_message(actor.practice_id, ctx.conversation.id, message_id)
    decision = policy.may_remove_message(actor.party, msg)
    if not decision:
        raise refuse(decision)
    removed_at = uow.conversations.mark_removed(actor.practice_id, msg, actor.party)
    uow.audit.record(
        actor, "message.removed", "message", msg.id, conversation_id=ctx.conversation.id
    )
    uow.outbox.add(
        actor.practice_id,
        "message.removed",
        conversation_id=ctx.conversation.id,
        message_id=msg.id,
        seq=msg.seq,
    )
    uow.commit()
    return Message(
        msg.id,
        msg.conversation_id,
        msg.seq,
        msg.sender,
        None,
        msg.created_at,
        removed_at,
        actor.party,
    )
