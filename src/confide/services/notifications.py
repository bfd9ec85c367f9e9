"""Email notifications about new secure messages (NT1-NT3) and their settings.

When a message is sent (`on_message_sent`, in the send's own transaction), jobs are
queued for the other participants:

- `notify.client_email` (NT2) for the client or contact when a team member wrote: the
  email goes out at once, with the 24-hour portal link (PA1);
- `notify.unread_email` (NT3) for everyone else in the conversation: it waits until the
  oldest unread message is `delay` old (default 10 minutes), then emails team members
  whose preference is on, and the client side if no email went out for that streak yet.

"One email per unread streak": a streak is everything a party has not read after their
read position; it is named by that position (`streak`). A row in `notifications`,
unique per (conversation, party, channel, streak), is claimed before the send and marked
sent after it, so whichever job gets there first sends and every later one stops. The
job keys (`dedupe_key`) keep the queue from filling up with one job per message.

The decision and the link are made by `prepare_*` in one transaction; the send happens
after it commits (jobs/notify.py), then `mark_sent` records it.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.entities import Conversation, Message
from confide.domain.errors import Forbidden, InvalidInput, NotAuthenticated, NotFound
from confide.domain.ids import MemberId, PracticeId
from confide.domain.notices import (
    AnnouncementAlert,
    ClientMessageAlert,
    LinkUrl,
    MemberUnreadAlert,
    PracticeLabel,
)
from confide.services.access import access_conversation, acting_member, load_practice, require
from confide.services.links import Purpose, issue_link
from confide.store.clock import utcnow
from confide.store.repos.jobs import NewJob
from confide.store.uow import UnitOfWork

CLIENT_EMAIL = "notify.client_email"
UNREAD_EMAIL = "notify.unread_email"
PORTAL_LINK_TTL = timedelta(hours=24)  # PA1
CLIENT_CHANNEL = "client_email"
MEMBER_CHANNEL = "member_email"
PORTAL_LINK_PATH = "/l/m/"


def streak_key(kind: str, practice_id: int, conversation_id: int, party: Party, streak: int) -> str:
    return f"{kind}:{practice_id}:{conversation_id}:{party}:{streak}"


def on_message_sent(
    uow: UnitOfWork, actor: Actor, conversation: Conversation, message: Message
) -> None:
    """Queue the notification jobs of a new message, in the send's transaction. Only
    ids go into the jobs; everything else is loaded when they run. One job per
    recipient and unread streak: after the first message of a streak the insert is a
    no-op (the dedupe key exists), all of a message's in one statement."""
    jobs: list[NewJob] = []
    for p in conversation.participants:
        if p.party == message.sender:
            continue
        payload = {"conversation_id": conversation.id, "party": str(p.party)}
        if p.party.kind is not PartyKind.MEMBER and actor.is_member:
            key = streak_key("nt2", actor.practice_id, conversation.id, p.party, p.last_read_seq)
            jobs.append(NewJob(CLIENT_EMAIL, payload, key))
        key = streak_key("nt3", actor.practice_id, conversation.id, p.party, p.last_read_seq)
        jobs.append(NewJob(UNREAD_EMAIL, payload, key))
    uow.jobs.enqueue_deduped(actor.practice_id, jobs)


def parse_party(text: str) -> Party:
    kind, _, pid = text.partition(":")
    return Party(PartyKind(kind), int(pid))


@dataclass(frozen=True)
class Prepared:
    """An email to send: recipient, content, and the claim to mark sent afterwards."""

    practice_id: PracticeId
    notification_id: int
    party: Party
    to: str
    notice: ClientMessageAlert | MemberUnreadAlert | AnnouncementAlert
    message_id: str  # the same for every attempt of this streak's email


@dataclass(frozen=True)
class Wait:
    """Not yet: look again at `until` (NT3's delay has not passed)."""

    until: datetime


def _recipient(
    uow: UnitOfWork, practice_id: PracticeId, conversation: Conversation, party: Party
) -> str | None:
    """The party's address if they may read this conversation now (EN2, EN3, PM2, EN6:
    whoever could not open it gets no email about it either), else None."""
    try:
        access_conversation(uow, Actor(practice_id, party, Via.INTERNAL), conversation.id)
    except (NotFound, Forbidden, NotAuthenticated):
        return None
    if party.kind is PartyKind.MEMBER:
        member = uow.people.get_member(practice_id, party.id)
        if not uow.notifications.get_email_new_messages(practice_id, MemberId(member.id)):
            return None  # NT3 preference off
        return member.email
    if party.kind is PartyKind.CONTACT:
        return uow.people.get_contact(practice_id, party.id).email or None
    return uow.people.get_client(practice_id, party.id).email or None


def prepare_email(
    uow: UnitOfWork,
    practice_id: PracticeId,
    *,
    kind: str,
    conversation_id: int,
    party: Party,
    origin: str,
    delay: timedelta,
    job_id: int,
    now: datetime | None = None,
) -> Prepared | Wait | None:
    """Decide one notification job (NT2 when `kind` is CLIENT_EMAIL, NT3 otherwise) and,
    if an email is due, claim it and make its link. Commits. None: nothing to send."""
    now = now or utcnow()
    conversation = uow.conversations.get_conversation(practice_id, conversation_id)
    me = conversation.participant(party)
    if me is None:
        return None
    head = uow.notifications.first_unread(
        practice_id, conversation_id, party, after_seq=me.last_read_seq
    )
    if head is None:
        return None  # read in time (or nothing left unread): no email
    if kind == UNREAD_EMAIL and now < head.created_at + delay:
        return Wait(head.created_at + delay)
    to = _recipient(uow, practice_id, conversation, party)
    if to is None:
        return None
    client_side = party.kind is not PartyKind.MEMBER
    streak = me.last_read_seq
    claim = uow.notifications.claim_notification(
        practice_id,
        conversation_id=conversation_id,
        party=party,
        channel=CLIENT_CHANNEL if client_side else MEMBER_CHANNEL,
        streak=streak,
        reason="nt2" if kind == CLIENT_EMAIL else "nt3",
        job_id=job_id,
    )
    if claim is None:
        uow.commit()
        return None  # this streak's email went out already
    notice: ClientMessageAlert | MemberUnreadAlert
    if client_side:
        link = issue_link(
            uow,
            practice_id,
            Purpose.PORTAL,
            party,
            ttl=PORTAL_LINK_TTL,
            conversation_id=conversation_id,
            now=now,
        )
        practice = uow.practices.get_practice(practice_id)
        notice = ClientMessageAlert(
            link=LinkUrl(origin, PORTAL_LINK_PATH, link.token),
            valid_hours=int(PORTAL_LINK_TTL.total_seconds() // 3600),
            practice=PracticeLabel.if_allowed(
                practice.name, name_practice=uow.notifications.get_name_practice(practice_id)
            ),
        )
    else:
        notice = MemberUnreadAlert(
            app=LinkUrl(origin, "/"), minutes=max(1, int(delay.total_seconds() // 60))
        )
    uow.commit()
    return Prepared(
        practice_id,
        claim,
        party,
        to,
        notice,
        message_id=f"notification-{practice_id}-{claim}",
    )


def mark_sent(uow: UnitOfWork, prepared: Prepared) -> None:
    """After the SMTP server (or the mail folder) took the email: audited, ids only."""
    uow.notifications.mark_sent(prepared.practice_id, prepared.notification_id)
    uow.audit.record(
        Actor.system(prepared.practice_id),
        "email.sent",
        prepared.party.kind.value,
        prepared.party.id,
        notification_id=prepared.notification_id,
        template=prepared.notice.template,
    )
    uow.commit()


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PracticeNotificationSettings:
    name_practice: bool


def get_practice_settings(uow: UnitOfWork, actor: Actor) -> PracticeNotificationSettings:
    acting_member(uow, actor)
    return PracticeNotificationSettings(uow.notifications.get_name_practice(actor.practice_id))


def set_name_practice(uow: UnitOfWork, actor: Actor, *, on: bool) -> PracticeNotificationSettings:
    """NT1: "name the practice in notifications" (off by default); practice settings
    editors only (the same people as the messaging switches)."""
    me = acting_member(uow, actor)
    require(policy.may_change_practice_settings(me.member))
    load_practice(uow, actor)
    uow.notifications.set_name_practice(actor.practice_id, on)
    uow.audit.record(
        actor, "practice.notifications_changed", "practice", actor.practice_id, name_practice=on
    )
    uow.commit()
    return PracticeNotificationSettings(on)


def get_email_preference(uow: UnitOfWork, actor: Actor) -> bool:
    me = acting_member(uow, actor)
    return uow.notifications.get_email_new_messages(actor.practice_id, me.member.id)


def set_email_preference(uow: UnitOfWork, actor: Actor, *, on: bool | None) -> bool:
    """NT3: "email me about new secure messages", the member's own (on by default)."""
    if on is None:
        raise InvalidInput("invalid_input", "email_new_messages: a boolean is required.")
    me = acting_member(uow, actor)
    uow.notifications.set_email_new_messages(actor.practice_id, me.member.id, on)
    uow.audit.record(
        actor, "member.notifications_changed", "member", me.member.id, email_new_messages=on
    )
    uow.commit()
    return on
