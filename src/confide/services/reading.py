"""Reading: opening a conversation (audited, RC1), read positions and unread counts
(MS7), the conversation list and recipient search (MS8)."""

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind
from confide.domain.entities import Conversation, Message
from confide.domain.errors import DomainError, InvalidInput
from confide.domain.ids import PracticeId
from confide.domain.text import prepare_search
from confide.services.access import (
    access_conversation,
    acting_client_side,
    acting_member,
    load_practice,
    require_messaging_plan,
)
from confide.services.directory import PartyInfo, describe, member_info
from confide.store.repos.conversations import ConversationSummary
from confide.store.uow import UnitOfWork

MAX_PAGE = 100
# A conversation's unread count on its page stops counting here (the app shows "999+").
UNREAD_CAP = 1000


@dataclass(frozen=True)
class ConversationPage:
    conversation: Conversation
    people: dict[Party, PartyInfo]
    messages: list[Message]
    has_older: bool
    unread: int
    may_reply: bool
    reply_refusal: str | None


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_limit", f"limit must be between 1 and {MAX_PAGE}.")
    return limit


def open_conversation(
    uow: UnitOfWork,
    actor: Actor,
    conversation_id: int,
    *,
    before_seq: int | None = None,
    after_seq: int | None = None,
    limit: int = 50,
    mark_read: bool = True,
) -> ConversationPage:
    """One page of a conversation. Opening it reads it (MS7): the actor's read position
    moves to the newest message shown. Audited as a read of health information."""
    limit = _check_limit(limit)
    ctx = access_conversation(uow, actor, conversation_id)
    conv = ctx.conversation
    messages = uow.conversations.list_messages(
        actor.practice_id, conv.id, before_seq=before_seq, after_seq=after_seq, limit=limit
    )
    has_older = bool(messages) and messages[0].seq > 1
    if not messages and before_seq is None and after_seq is None:
        has_older = False
    moved = False
    if mark_read and messages:
        moved = uow.conversations.mark_read(
            actor.practice_id, conv.id, actor.party, messages[-1].seq
        )
    uow.audit.record(
        actor,
        "conversation.opened",
        "conversation",
        conv.id,
        first_seq=messages[0].seq if messages else None,
        last_seq=messages[-1].seq if messages else None,
    )
    if moved:
        uow.outbox.add(
            actor.practice_id,
            "conversation.read",
            conversation_id=conv.id,
            party=str(actor.party),
            seq=messages[-1].seq,
        )
    if ctx.me is not None:
        decision = policy.may_reply_as_member(ctx.me, ctx.view)
    else:
        decision = policy.may_reply_as_client(actor.party, ctx.view)
    people = describe(uow, actor.practice_id, [p.party for p in conv.participants])
    unread = uow.conversations.unread_in(actor.practice_id, conv.id, actor.party, cap=UNREAD_CAP)
    uow.commit()
    conv = uow.conversations.get_conversation(actor.practice_id, conv.id) if moved else conv
    return ConversationPage(
        conv,
        people,
        messages,
        has_older,
        unread,
        decision.allowed,
        None if decision else decision.code,
    )


def mark_read(uow: UnitOfWork, actor: Actor, conversation_id: int, *, seq: int) -> int:
    """Move the read position up to `seq` (clamped to the newest message)."""
    ctx = access_conversation(uow, actor, conversation_id)
    if seq < 0:
        raise InvalidInput("invalid_seq", "seq must not be negative.")
    seq = min(seq, ctx.conversation.last_seq)
    if uow.conversations.mark_read(actor.practice_id, ctx.conversation.id, actor.party, seq):
        uow.audit.record(actor, "conversation.read", "conversation", ctx.conversation.id, seq=seq)
        uow.outbox.add(
            actor.practice_id,
            "conversation.read",
            conversation_id=ctx.conversation.id,
            party=str(actor.party),
            seq=seq,
        )
    uow.commit()
    return uow.conversations.unread_by_conversation(
        actor.practice_id, actor.party, [ctx.conversation.id]
    ).get(ctx.conversation.id, 0)


@dataclass(frozen=True)
class ConversationListItem:
    conversation: Conversation
    people: dict[Party, PartyInfo]
    unread: int


def _readable(uow: UnitOfWork, actor: Actor) -> "policy.Decision | None":
    """Clients whose messaging is off (EN6), and members whose own box is off (EN2),
    see no conversations at all."""
    if actor.is_client_side:
        client, contact = acting_client_side(uow, actor)
        return policy.client_side_may_message(load_practice(uow, actor), client, contact)
    me = acting_member(uow, actor).member
    if not me.messaging_enabled:
        return policy.deny(policy.MEMBER_MESSAGING_OFF)  # EN2: receives nothing
    return None


def list_conversations(
    uow: UnitOfWork, actor: Actor, *, limit: int = 50
) -> list[ConversationListItem]:
    """MS8: the actor's conversations, latest activity first, with unread counts.

    A member's client conversations whose client they no longer have access to are
    left out (they cannot open them either), and the list goes on past them: `limit`
    conversations the actor can open, or all there are."""
    limit = _check_limit(limit)
    practice = load_practice(uow, actor)
    require_messaging_plan(practice)
    gate = _readable(uow, actor)
    if gate is not None and not gate:
        return []
    summaries: list[ConversationSummary] = []
    after: tuple[datetime, int] | None = None
    while len(summaries) < limit:
        chunk = uow.conversations.list_for_party(
            actor.practice_id, actor.party, limit=limit, after=after
        )
        summaries += _openable(uow, actor, chunk)[: limit - len(summaries)]
        if len(chunk) < limit:
            break
        after = (chunk[-1].conversation.last_activity_at, chunk[-1].conversation.id)
    people = describe(
        uow, actor.practice_id, {p.party for s in summaries for p in s.conversation.participants}
    )
    return [
        ConversationListItem(
            s.conversation,
            {p.party: people[p.party] for p in s.conversation.participants},
            s.unread,
        )
        for s in summaries
    ]


def _openable(
    uow: UnitOfWork, actor: Actor, summaries: list[ConversationSummary]
) -> list[ConversationSummary]:
    """Those of a member's `summaries` they may open: team conversations, and those
    about a client they have access to (PM2, PM3). A client-side party's are all theirs."""
    if not actor.is_member:
        return summaries
    visible = _visible_client_ids(uow, actor, (s.conversation.client_id for s in summaries))
    return [
        s
        for s in summaries
        if s.conversation.client_id is None or s.conversation.client_id in visible
    ]


def _recent(uow: UnitOfWork, actor: Actor, limit: int) -> list[PartyInfo]:
    """MS8 "recently messaged": up to `limit` partners of the member's latest
    conversations, passing over clients (and their contacts) whose access ended: not
    even the name (PM2). Read on until `limit` are found or there are no more."""
    recent: list[PartyInfo] = []
    offset, chunk = 0, limit * 2
    while len(recent) < limit:
        partners = uow.conversations.recent_partners(actor.practice_id, actor.party, chunk, offset)
        contacts = {
            p: uow.people.get_contact(actor.practice_id, p.id)
            for p in partners
            if p.kind is PartyKind.CONTACT
        }
        visible = _visible_client_ids(
            uow,
            actor,
            [p.id for p in partners if p.kind is PartyKind.CLIENT]
            + [c.client_id for c in contacts.values()],
        )
        info = describe(uow, actor.practice_id, partners)
        for p in partners:
            if p.kind is PartyKind.CLIENT and p.id not in visible:
                continue
            if p.kind is PartyKind.CONTACT and contacts[p].client_id not in visible:
                continue
            recent.append(info[p])
        if len(partners) < chunk:
            break
        offset += chunk
    return recent[:limit]


def _visible_client_ids(uow: UnitOfWork, actor: Actor, among: Iterable[int | None]) -> set[int]:
    """Those of the clients `among` the acting member has access to (PM2, PM3)."""
    wanted = {c for c in among if c is not None}
    if not wanted:
        return set()
    me = acting_member(uow, actor)
    if policy.sees_every_client(me.member):
        return wanted
    return uow.people.visible_client_ids(actor.practice_id, me, wanted)


def unread_total(uow: UnitOfWork, actor: Actor) -> int:
    """MS7: the red bubble: unread messages over every conversation the actor can open."""
    if not _may_have_unread(uow, actor):
        return 0
    counts = uow.conversations.unread_by_conversation(actor.practice_id, actor.party)
    clients = _clients_of(uow, actor.practice_id, [actor], [counts])
    return _visible_total(uow, actor, counts, clients)


def unread_totals(uow: UnitOfWork, actors: Collection[Actor]) -> dict[Actor, int]:
    """`unread_total` for many actors at once (the hub, after a batch of events): the
    same rules, in two queries per practice and kind of party instead of two per
    actor. An actor `unread_total` would refuse (a practice without messaging, a
    member no longer active) is left out."""
    totals: dict[Actor, int] = {}
    by_practice: dict[PracticeId, list[Actor]] = {}
    for actor in actors:
        try:
            if not _may_have_unread(uow, actor):
                totals[actor] = 0
                continue
        except DomainError:
            continue
        by_practice.setdefault(actor.practice_id, []).append(actor)
    for practice_id, group in by_practice.items():
        counts = uow.conversations.unread_of_parties(practice_id, {a.party for a in group})
        clients = _clients_of(uow, practice_id, group, counts.values())
        for actor in group:
            totals[actor] = _visible_total(uow, actor, counts[actor.party], clients)
    return totals


def _may_have_unread(uow: UnitOfWork, actor: Actor) -> bool:
    require_messaging_plan(load_practice(uow, actor))
    gate = _readable(uow, actor)
    return gate is None or bool(gate)


def _clients_of(
    uow: UnitOfWork,
    practice_id: PracticeId,
    actors: Collection[Actor],
    counts: Iterable[dict[int, int]],
) -> dict[int, int | None]:
    """The client of each conversation with something unread, where a member is among
    `actors` (only a member's total depends on which clients they may reach)."""
    if not any(a.is_member for a in actors):
        return {}
    ids = {cid for per_conversation in counts for cid in per_conversation}
    return uow.conversations.client_ids_of(practice_id, sorted(ids)) if ids else {}


def _visible_total(
    uow: UnitOfWork, actor: Actor, counts: dict[int, int], clients: dict[int, int | None]
) -> int:
    """A member's client conversations whose client they no longer reach do not count
    (they cannot open them either)."""
    if actor.is_member and counts:
        theirs = [clients.get(cid) for cid in counts]
        if any(c is not None for c in theirs):
            visible = _visible_client_ids(uow, actor, theirs)
            return sum(
                n
                for cid, n in counts.items()
                if clients.get(cid) is None or clients[cid] in visible
            )
    return sum(counts.values())


@dataclass(frozen=True)
class Recipients:
    recent: list[PartyInfo]
    members: list[PartyInfo]
    clients: list[PartyInfo]


def search_recipients(uow: UnitOfWork, actor: Actor, *, q: str = "", limit: int = 20) -> Recipients:
    """MS8 "New message": people recently messaged, and a search of clients and team
    members by name. Clients see only the team members they may start with (PM4)."""
    limit = _check_limit(limit)
    q = prepare_search(q)
    practice = load_practice(uow, actor)
    require_messaging_plan(practice)
    if actor.is_client_side:
        client, _contact = acting_client_side(uow, actor)
        all_members = uow.people.search_members(actor.practice_id, q, 1000)
        facts = [uow.people.member_facts(actor.practice_id, m) for m in all_members]
        allowed = [
            member_info(f.member)
            for f in facts
            if policy.client_may_start_with(f, client)
            and policy.member_may_message(practice, f.member)
        ][:limit]
        return Recipients([], allowed, [])
    me = acting_member(uow, actor)
    members = [
        member_info(m)
        for m in uow.people.search_members(
            actor.practice_id, q, limit, messaging_only=True, but=me.member.id
        )
    ]
    clients = [
        PartyInfo(c.party, c.name, "Client")
        for c in uow.people.list_visible_clients(
            actor.practice_id, me, q=q, limit=limit, active_only=True
        )
    ]
    recent = [] if q else _recent(uow, actor, limit)
    return Recipients(recent, members, clients)
