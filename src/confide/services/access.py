"""Fetch-and-authorize: the only way services load what an actor asks for.

Missing and forbidden raise the same NotFound (PM7). A refusal about something the
actor may see (their own practice's settings, a conversation they are in) raises
Forbidden with the policy's reason code.
"""

from dataclasses import dataclass

from confide.domain import policy
from confide.domain.actors import Actor, PartyKind, Via
from confide.domain.entities import Client, Contact, Conversation, MemberFacts, Practice
from confide.domain.errors import Forbidden, NotAuthenticated, NotFound
from confide.domain.policy import ConversationView, Decision
from confide.store.uow import UnitOfWork

MESSAGES = {
    policy.PLAN_REQUIRED: "Secure messaging is part of the Essential and Plus plans.",
    policy.TEAM_MESSAGING_OFF: "Secure messaging with the team is switched off for the practice.",
    policy.CLIENT_MESSAGING_OFF_PRACTICE: (
        "Secure messaging with clients is switched off for the practice."
    ),
    policy.MEMBER_MESSAGING_OFF: "Secure messaging is not enabled for your account.",
    policy.RECIPIENT_MESSAGING_OFF: "Secure messaging is not enabled for one of the recipients.",
    policy.CLIENT_MESSAGING_OFF: "Secure messaging is off for this client. Enable it first.",
    policy.NO_PORTAL_ACCESS: "This client has no client portal access. Enable it first.",
    policy.NO_CLIENT_ACCESS: "You do not have access to this client.",
    policy.RECIPIENT_NO_ACCESS: "One of the team members does not have access to this client.",
    policy.NOT_ALLOWED_TO_START: "You cannot start a conversation with this team member.",
    policy.NO_RECIPIENTS: "Choose who the message is for.",
    policy.NOT_SENDER: "You can remove only messages you sent.",
    policy.ALREADY_REMOVED: "This message was already removed.",
    policy.NOT_PERMITTED: "You do not have permission to do this.",
    policy.INACTIVE: "This account is not active.",
}


def refuse(decision: Decision) -> Forbidden:
    return Forbidden(decision.code, MESSAGES.get(decision.code, "This is not allowed."))


def require(decision: Decision) -> None:
    if not decision:
        raise refuse(decision)


def load_practice(uow: UnitOfWork, actor: Actor) -> Practice:
    return uow.practices.get_practice(actor.practice_id)


def acting_member(uow: UnitOfWork, actor: Actor) -> MemberFacts:
    """The member behind an actor, with grants and supervisees; an inactive member is
    treated as signed out."""
    if actor.party.kind is not PartyKind.MEMBER:
        raise NotFound()
    try:
        member = uow.people.get_member(actor.practice_id, actor.party.id)
    except NotFound:
        raise NotAuthenticated() from None
    if not member.active:
        raise NotAuthenticated()
    return uow.people.member_facts(actor.practice_id, member)


def acting_client_side(uow: UnitOfWork, actor: Actor) -> tuple[Client, Contact | None]:
    """The client (and the contact, when a contact acts) behind a client-side actor."""
    try:
        if actor.party.kind is PartyKind.CLIENT:
            client = uow.people.get_client(actor.practice_id, actor.party.id)
            if not client.active:
                raise NotAuthenticated()
            return client, None
        if actor.party.kind is PartyKind.CONTACT:
            contact = uow.people.get_contact(actor.practice_id, actor.party.id)
            client = uow.people.get_client(actor.practice_id, contact.client_id)
            if not client.active:
                raise NotAuthenticated()
            return client, contact
    except NotFound:
        raise NotAuthenticated() from None
    raise NotFound()


def ensure_active(uow: UnitOfWork, actor: Actor) -> None:
    """An actor whose account was deactivated or removed is signed out everywhere: every
    request checks it before anything else, so no answer depends on what exists."""
    if actor.is_member:
        try:
            member = uow.people.get_member(actor.practice_id, actor.party.id)
        except NotFound:
            raise NotAuthenticated() from None
        if not member.active:
            raise NotAuthenticated()
    elif actor.is_client_side:
        acting_client_side(uow, actor)
    else:
        raise NotAuthenticated()


def require_messaging_plan(practice: Practice) -> None:
    require(policy.may_use_messaging(practice))


@dataclass(frozen=True)
class ClientContext:
    practice: Practice
    me: MemberFacts
    client: Client


def access_client(uow: UnitOfWork, actor: Actor, client_id: int) -> ClientContext:
    """A client the acting member has access to; NotFound otherwise (PM7)."""
    me = acting_member(uow, actor)
    practice = load_practice(uow, actor)
    client = uow.people.get_client(actor.practice_id, client_id)
    if not policy.has_client_access(me, client):
        raise NotFound("client")
    return ClientContext(practice, me, client)


@dataclass(frozen=True)
class ConversationContext:
    practice: Practice
    conversation: Conversation
    view: ConversationView
    me: MemberFacts | None  # set when a member acts


def access_conversation(uow: UnitOfWork, actor: Actor, conversation_id: int) -> ConversationContext:
    """A conversation the actor may read now, or NotFound (missing and forbidden alike)."""
    if actor.via is Via.PORTAL_LINK and actor.conversation_scope != conversation_id:
        raise NotFound("conversation")  # PA6: a portal link reaches its conversation only
    practice = load_practice(uow, actor)
    require_messaging_plan(practice)
    conversation = uow.conversations.get_conversation(actor.practice_id, conversation_id)
    client = (
        uow.people.get_client(actor.practice_id, conversation.client_id)
        if conversation.client_id is not None
        else None
    )
    side = conversation.client_party
    contact = (
        uow.people.get_contact(actor.practice_id, side.id)
        if side is not None and side.kind is PartyKind.CONTACT
        else None
    )
    view = ConversationView(practice, conversation, client, contact)
    me = None
    if actor.is_member:
        me = acting_member(uow, actor)
        decision = policy.may_read_conversation_as_member(me, view)
    elif actor.is_client_side:
        acting_client_side(uow, actor)  # the client or contact still exists
        decision = policy.may_read_conversation_as_client(actor.party, view)
    else:
        raise NotFound("conversation")
    if not decision:
        raise NotFound("conversation")
    return ConversationContext(practice, conversation, view, me)
