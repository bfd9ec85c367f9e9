"""Conversation list and thread views shared by the practice app (`/messages`) and the
client portal (`/portal`): the same services, the same policy, the same templates."""

from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from confide.domain import policy
from confide.domain.actors import Actor, Party
from confide.domain.entities import Message
from confide.domain.text import MAX_MESSAGE_CHARS
from confide.services import messaging, reading
from confide.services.directory import PartyInfo
from confide.store.uow import UnitOfWork
from confide.web.pages.common import Nav, go, is_htmx, new_key, render

REFUSALS = {
    policy.CLIENT_MESSAGING_OFF: "Secure messaging is turned off for this client.",
    policy.NO_PORTAL_ACCESS: "This client has no portal access, so they cannot receive messages.",
    policy.CLIENT_MESSAGING_OFF_PRACTICE: "The practice has turned off messaging with clients.",
    policy.TEAM_MESSAGING_OFF: "The practice has turned off secure messaging.",
    policy.MEMBER_MESSAGING_OFF: "Secure messaging is turned off for your account.",
    policy.RECIPIENT_MESSAGING_OFF: "Secure messaging is turned off for someone here.",
    policy.NO_CLIENT_ACCESS: "You no longer have access to this client.",
    policy.INACTIVE: "This conversation is closed.",
}


def refusal_text(code: str | None) -> str:
    return REFUSALS.get(code or "", "You cannot reply in this conversation.")


@dataclass(frozen=True)
class ListItem:
    id: int
    title: str
    labels: str
    unread: int
    last_activity_at: object
    team_only: bool


def conversation_items(uow: UnitOfWork, actor: Actor) -> list[ListItem]:
    """MS8: latest activity first, with unread counts (MS7), names and roles."""
    items = []
    for i in reading.list_conversations(uow, actor, limit=100):
        others = [info for party, info in i.people.items() if party != actor.party]
        items.append(
            ListItem(
                i.conversation.id,
                ", ".join(o.name for o in others) or "Only you",
                ", ".join(dict.fromkeys(o.label for o in others)),
                i.unread,
                i.conversation.last_activity_at,
                i.conversation.is_team_only,
            )
        )
    return items


@dataclass(frozen=True)
class ThreadView:
    id: int
    title: str
    others: list[PartyInfo]
    away: list[PartyInfo]  # members of the conversation whose away message is on (AW1, AW3)
    messages: list[Message]
    people: dict[Party, PartyInfo]
    may_reply: bool
    refusal: str
    has_older: bool
    last_seq: int


def open_thread(
    uow: UnitOfWork,
    actor: Actor,
    conversation_id: int,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    mark_read: bool = True,
) -> ThreadView:
    """Opening a conversation reads it (MS7) and is audited (RC1), via the service.
    `mark_read=False` when the page is not being looked at (a hidden tab)."""
    page = reading.open_conversation(
        uow,
        actor,
        conversation_id,
        after_seq=after_seq,
        before_seq=before_seq,
        limit=100 if after_seq else 50,
        mark_read=mark_read and before_seq is None,
    )
    others = [info for party, info in page.people.items() if party != actor.party]
    return ThreadView(
        page.conversation.id,
        ", ".join(o.name for o in others) or "Only you",
        others,
        [o for o in others if o.away_on],
        page.messages,
        page.people,
        page.may_reply,
        "" if page.may_reply else refusal_text(page.reply_refusal),
        page.has_older,
        page.conversation.last_seq,
    )


def thread_context(
    base: str, nav: Nav, actor: Actor, items: list[ListItem], thread: ThreadView
) -> dict[str, object]:
    return {
        "base": base,
        "nav": nav,
        "me": actor.party,
        "items": items,
        "current": thread.id,
        "thread": thread,
        "key": new_key(),
        "max_chars": MAX_MESSAGE_CHARS,
        "can_remove": actor.is_member,
    }


def send(
    request: Request,
    uow: UnitOfWork,
    actor: Actor,
    base: str,
    conversation_id: int,
    text: str,
    key: str,
) -> Response:
    """MS1/MS2/MS5 through the service. htmx gets a fresh composer key (the page script
    then fetches the new messages, one path for own and others' messages); a plain form
    goes back to the thread."""
    messaging.send_message(uow, actor, messaging.SendMessage(conversation_id, text, key))
    if not is_htmx(request):
        return go(request, f"{base}/{conversation_id}")
    return render(request, "_key.html", key=new_key())
