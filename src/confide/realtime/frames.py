"""From events to frames, authorized for each receiver NOW (docs/realtime.md).

Runs in a worker thread inside one read unit of work. For every event and every actor
with an open socket, the question "may this actor read this conversation?" goes to
`services.access.access_conversation`, the same check the API makes: a socket never
receives a frame about a conversation its user may not read at the moment the frame is
built, whatever they could read when the event happened.

Frames are JSON text, encoded once per event and shared by every socket that gets it.
Only `message.created` carries message text (as the API renders the message); a removed
message renders without it.
"""

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind
from confide.domain.entities import Message
from confide.domain.errors import DomainError, NotAuthenticated
from confide.domain.ids import ClientId, PracticeId
from confide.services import reading
from confide.services.access import (
    access_conversation,
    acting_client_side,
    acting_member,
    load_practice,
    require_messaging_plan,
)
from confide.services.directory import PartyInfo, describe, member_info
from confide.store.repos.events import StoredEvent
from confide.store.uow import UnitOfWork

log = logging.getLogger("confide.realtime")

# The outbox kinds the relay moves into the event log.
EVENT_KINDS = frozenset(
    {
        "message.created",
        "message.removed",
        "conversation.read",
        "away.changed",
        "session.ended",
        "member.disabled",
        "member.messaging_changed",
        "access.changed",
        "client.messaging_off",
        "contact.messaging_off",
        "practice.messaging_off",
        "practice.security_changed",
    }
)

# Close codes (4000-4999 are the application's).
SESSION_ENDED = 4401
NOT_ALLOWED = 4403
SLOW_READER = 4008
# RFC 6455 "Try Again Later": the process is at its socket cap (T39); reconnect later.
TRY_AGAIN_LATER = 1013


class Renderer(Protocol):
    """How the API renders a message; supplied by the web layer so that a frame holds
    exactly what `GET /conversations/{id}` would show."""

    def message(self, message: Message, people: dict[Party, PartyInfo]) -> dict[str, Any]: ...


def encode(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Recheck:
    """After this event, sockets of these parties (None: every client-side party of the
    practice) must re-check their session and whether they may stay open; `sessions`:
    instead, every socket of the practice reads its session again (the practice's
    session rules changed)."""

    practice_id: PracticeId
    parties: frozenset[Party] | None
    sessions: bool = False


@dataclass
class Batch:
    frames: dict[int, dict[Actor, list[str]]] = field(default_factory=dict)
    rechecks: dict[int, Recheck] = field(default_factory=dict)

    def add(self, position: int, actor: Actor, frame: str) -> None:
        self.frames.setdefault(position, {}).setdefault(actor, []).append(frame)

    def for_actor(self, actor: Actor) -> list[str]:
        return [f for pos in sorted(self.frames) for f in self.frames[pos].get(actor, [])]


def parse_party(value: object) -> Party | None:
    try:
        kind, _, pid = str(value).partition(":")
        return Party(PartyKind(kind), int(pid))
    except ValueError:
        return None


class _Builder:
    def __init__(self, uow: UnitOfWork, render: Renderer) -> None:
        self.uow = uow
        self.render = render
        self.batch = Batch()
        self.unread_at: dict[Actor, int] = {}
        self._readable: dict[tuple[Actor, int], bool] = {}
        self._member_ok: dict[Actor, bool] = {}
        self._messages: dict[tuple[PracticeId, int], Message] = {}
        self._people: dict[tuple[PracticeId, Party], PartyInfo] = {}

    def load(
        self, events: Sequence[StoredEvent], audience: Mapping[PracticeId, Collection[Actor]]
    ) -> None:
        """Read what the batch's message events need in a few queries per practice, not
        a few per event and receiver: their conversations with participants, the
        receivers who take part in them and the conversations' clients (into the unit of
        work's identity maps, where `access_conversation` finds them), the new messages,
        and their senders as the API describes them."""
        conversations: dict[PracticeId, set[int]] = {}
        messages: dict[PracticeId, list[tuple[int, int]]] = {}  # (conversation, message)
        for ev in events:
            if ev.kind not in ("message.created", "message.removed"):
                continue
            try:
                cid = int(ev.payload["conversation_id"])
                conversations.setdefault(ev.practice_id, set()).add(cid)
                if ev.kind == "message.created":
                    mid = int(ev.payload["message_id"])
                    messages.setdefault(ev.practice_id, []).append((cid, mid))
            except (KeyError, TypeError, ValueError):
                continue  # reported when the event itself is built
        heard: dict[PracticeId, set[int]] = {}  # conversations with a receiver here
        for pid, cids in conversations.items():
            self.uow.conversations.load_conversations(pid, cids)
            listening = {a.party for a in audience.get(pid, ())}
            receivers: set[Party] = set()
            clients: set[int] = set()
            for cid in cids:
                try:
                    conversation = self.uow.conversations.get_conversation(pid, cid)
                except DomainError:
                    continue
                here = listening.intersection(p.party for p in conversation.participants)
                if here:
                    receivers |= here
                    heard.setdefault(pid, set()).add(cid)
                    if conversation.client_id is not None:
                        clients.add(conversation.client_id)
            members = [p.id for p in receivers if p.kind is PartyKind.MEMBER]
            if members:
                self.uow.people.facts_for(pid, members)
            clients.update(p.id for p in receivers if p.kind is PartyKind.CLIENT)
            self.uow.people.load_clients(pid, clients)
        for pid, pairs in messages.items():
            mids = [mid for cid, mid in pairs if cid in heard.get(pid, ())]
            if not mids:  # nobody here takes part: nothing to decrypt or describe
                continue
            found = self.uow.conversations.get_messages(pid, mids)
            self._messages.update(((pid, mid), m) for mid, m in found.items())
            people = describe(self.uow, pid, {m.sender for m in found.values()})
            self._people.update(((pid, party), info) for party, info in people.items())

    def may_read(self, actor: Actor, conversation_id: int) -> bool:
        """THE check: the API's `access_conversation`, cached for this batch only (one
        read transaction, so the answer cannot change within it)."""
        key = (actor, conversation_id)
        if key not in self._readable:
            try:
                access_conversation(self.uow, actor, conversation_id)
                self._readable[key] = True
            except DomainError:
                self._readable[key] = False
        return self._readable[key]

    def member_ok(self, actor: Actor) -> bool:
        if actor not in self._member_ok:
            try:
                acting_member(self.uow, actor)
                require_messaging_plan(load_practice(self.uow, actor))
                self._member_ok[actor] = True
            except DomainError:
                self._member_ok[actor] = False
        return self._member_ok[actor]

    def event(self, ev: StoredEvent, actors: Collection[Actor]) -> None:
        kind, p = ev.kind, ev.payload
        if kind in ("message.created", "message.removed"):
            self.message_event(ev, actors)
        elif kind == "conversation.read":
            party = parse_party(p.get("party"))
            cid = int(p["conversation_id"])
            for a in actors:
                if a.party == party and self.may_read(a, cid):
                    self.batch.add(
                        ev.position,
                        a,
                        encode(
                            {
                                "type": "conversation.read",
                                "position": ev.position,
                                "conversation_id": cid,
                                "seq": p.get("seq"),
                            }
                        ),
                    )
                    self.unread_at[a] = ev.position
        elif kind == "away.changed":
            self.away_event(ev, actors)
        elif kind in ("access.changed", "member.messaging_changed"):
            member = Party.member(int(p["member_id"]))
            for a in actors:
                if a.party == member:
                    self.unread_at[a] = ev.position
        elif kind == "session.ended":
            party = parse_party(p.get("party"))
            if party is not None:
                self.batch.rechecks[ev.position] = Recheck(ev.practice_id, frozenset({party}))
        elif kind == "member.disabled":
            member = Party.member(int(p["member_id"]))
            self.batch.rechecks[ev.position] = Recheck(ev.practice_id, frozenset({member}))
        elif kind == "client.messaging_off":
            client_id = ClientId(int(p["client_id"]))
            parties = {Party(PartyKind.CLIENT, client_id)} | {
                c.party for c in self.uow.people.list_contacts(ev.practice_id, client_id)
            }
            self.batch.rechecks[ev.position] = Recheck(ev.practice_id, frozenset(parties))
        elif kind == "contact.messaging_off":
            contact = Party(PartyKind.CONTACT, int(p["contact_id"]))
            self.batch.rechecks[ev.position] = Recheck(ev.practice_id, frozenset({contact}))
        elif kind == "practice.messaging_off":
            self.batch.rechecks[ev.position] = Recheck(ev.practice_id, None)
        elif kind == "practice.security_changed":
            self.batch.rechecks[ev.position] = Recheck(ev.practice_id, None, sessions=True)

    def message_event(self, ev: StoredEvent, actors: Collection[Actor]) -> None:
        p = ev.payload
        cid = int(p["conversation_id"])
        try:
            conversation = self.uow.conversations.get_conversation(ev.practice_id, cid)
        except DomainError:
            return
        # Targeting, not policy: only participants get conversation frames at all. Who
        # among them may read is `may_read`'s answer.
        parties = {part.party for part in conversation.participants}
        allowed = [a for a in actors if a.party in parties and self.may_read(a, cid)]
        if not allowed:
            return
        frame: dict[str, Any]
        if ev.kind == "message.created":
            message = self._messages.get((ev.practice_id, int(p["message_id"])))
            if message is None or message.conversation_id != conversation.id:
                return
            info = self._people.get((ev.practice_id, message.sender))
            people = {message.sender: info} if info is not None else {}
            frame = {
                "type": "message.created",
                "position": ev.position,
                "conversation_id": cid,
                "message": self.render.message(message, people),
            }
        else:  # MS6: ids only; the removed text never travels
            frame = {
                "type": "message.removed",
                "position": ev.position,
                "conversation_id": cid,
                "message_id": int(p["message_id"]),
                "seq": p.get("seq"),
            }
        text = encode(frame)
        sender = parse_party(p.get("sender"))
        for a in allowed:
            self.batch.add(ev.position, a, text)
            if ev.kind == "message.removed" or a.party != sender:
                self.unread_at[a] = ev.position

    def away_event(self, ev: StoredEvent, actors: Collection[Actor]) -> None:
        """AW1/AW3: team members see each other's away state (as in the directory);
        a client or contact sees it for members of a conversation they may read."""
        member_id = int(ev.payload["member_id"])
        try:
            info = member_info(self.uow.people.get_member(ev.practice_id, member_id))
        except DomainError:
            return
        text = encode(
            {
                "type": "away.changed",
                "position": ev.position,
                "member_id": member_id,
                "away": info.away_on,
                "away_text": info.away_text,
            }
        )
        for a in actors:
            if a.is_member:
                if self.member_ok(a):
                    self.batch.add(ev.position, a, text)
            elif self._shares_readable_conversation(a, info.party):
                self.batch.add(ev.position, a, text)

    def _shares_readable_conversation(self, actor: Actor, member: Party) -> bool:
        summaries = self.uow.conversations.list_for_party(
            actor.practice_id, actor.party, limit=1000
        )
        return any(
            s.conversation.participant(member) is not None
            and self.may_read(actor, s.conversation.id)
            for s in summaries
        )

    def unread_frames(self) -> None:
        totals = reading.unread_totals(self.uow, self.unread_at)
        for actor, position in self.unread_at.items():
            total = totals.get(actor)
            if total is None:  # refused (a member no longer active, ...)
                continue
            self.batch.add(
                position,
                actor,
                encode({"type": "unread", "position": position, "unread": total}),
            )


def build_batch(
    uow: UnitOfWork,
    events: Sequence[StoredEvent],
    audience: Mapping[PracticeId, Collection[Actor]],
    render: Renderer,
    *,
    unread: bool = True,
) -> Batch:
    """Frames for `events` (in position order) for each actor of `audience` (the actors
    with open sockets, by practice). With `unread`, each actor whose total may have
    changed gets one `unread` frame, after the last event that changed it."""
    builder = _Builder(uow, render)
    builder.load(events, audience)
    for ev in events:
        actors = audience.get(ev.practice_id)
        if not actors and ev.kind not in _RECHECK_KINDS:
            continue
        try:
            builder.event(ev, actors or ())
        except (KeyError, TypeError, ValueError) as exc:
            # A malformed payload: skip the event, never the batch (ids only: loggable).
            log.error("event %s (%s) skipped: %s", ev.position, ev.kind, type(exc).__name__)
    if unread:
        builder.unread_frames()
    return builder.batch


_RECHECK_KINDS = frozenset(
    {
        "session.ended",
        "member.disabled",
        "client.messaging_off",
        "contact.messaging_off",
        "practice.messaging_off",
        "practice.security_changed",
    }
)


def stay_open_code(uow: UnitOfWork, actor: Actor) -> int | None:
    """Whether a socket of `actor` may stay open: None, or the close code. A member must
    still be an active member of a practice with messaging; a client or contact must
    still pass EN3 (EN6: turning their messaging off closes their sockets at once)."""
    try:
        practice = load_practice(uow, actor)
        require_messaging_plan(practice)
        if actor.is_member:
            acting_member(uow, actor)
            return None
        client, contact = acting_client_side(uow, actor)
        decision = policy.client_side_may_message(practice, client, contact)
        return None if decision else NOT_ALLOWED
    except NotAuthenticated:
        return SESSION_ENDED
    except DomainError:
        return NOT_ALLOWED


def unread_total_or_zero(uow: UnitOfWork, actor: Actor) -> int:
    try:
        return reading.unread_total(uow, actor)
    except DomainError:
        return 0
