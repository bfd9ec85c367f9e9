"""Transcripts (TR1, TR3): a client's conversations, read from the practice's records.

- Who: every member with access to the client (`policy.may_view_transcript`); anyone
  else, clients and contacts included, gets the NotFound of a missing client (PM7).
  A transcript is a record, not messaging: the plan, the practice switches and the
  member's own EN2 box do not gate it.
- What: the conversations whose client is this client (with the client or one of their
  contacts). Team-only conversations have no client, so they never appear (TR3).
- Choosing participants: a conversation is shown when every chosen person takes part
  in it; choosing nobody shows every conversation of the client.
- Order: by conversation (oldest first), then by sequence number; a page holds at most
  `MAX_PAGE` messages and ends with a cursor `(conversation_id, seq)` to continue after.
- Removed messages are included with their text, marked removed by whom and when (MS6,
  RC3: this is the records path).
- Every view is audited (`transcript.viewed`, RC1) in the same transaction, ids only.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind
from confide.domain.entities import Client, Conversation, Message
from confide.domain.errors import InvalidInput, NotFound
from confide.domain.ids import PracticeId
from confide.services.access import access_client
from confide.services.directory import PartyInfo, describe
from confide.store.uow import UnitOfWork

DEFAULT_PAGE = 200
MAX_PAGE = 1000
MAX_CHOSEN = 50
_CHOOSABLE = {k.value: k for k in (PartyKind.MEMBER, PartyKind.CLIENT, PartyKind.CONTACT)}
_KIND_ORDER = {PartyKind.CLIENT: 0, PartyKind.CONTACT: 1, PartyKind.MEMBER: 2}


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a transcript page ended: continue after this message."""

    conversation_id: int
    seq: int

    def __str__(self) -> str:
        return f"{self.conversation_id}:{self.seq}"


@dataclass(frozen=True)
class Transcript:
    client: Client
    participants: list[PartyInfo]  # everyone in the client's conversations, to choose from
    chosen: tuple[Party, ...]
    conversations: list[Conversation]  # the ones shown (after choosing participants)
    people: dict[Party, PartyInfo]
    messages: list[Message]  # removed ones with their text
    next_cursor: Cursor | None


def parse_participants(text: str) -> tuple[Party, ...]:
    """`member:12,contact:3,client:7` → parties (the `kind:id` of PartyOut)."""
    chosen: list[Party] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        kind, _, ident = item.partition(":")
        if kind not in _CHOOSABLE or not ident.isdigit() or not 1 <= int(ident) <= 2**62:
            raise InvalidInput(
                "invalid_participants",
                "participants is a comma-separated list of member:ID, client:ID, contact:ID.",
            )
        party = Party(_CHOOSABLE[kind], int(ident))
        if party not in chosen:
            chosen.append(party)
    if len(chosen) > MAX_CHOSEN:
        raise InvalidInput("invalid_participants", f"Choose at most {MAX_CHOSEN} participants.")
    return tuple(chosen)


def parse_cursor(text: str) -> Cursor:
    """`conversation_id:seq`, as returned in `next_cursor`."""
    conv, _, seq = text.partition(":")
    if not (conv.isdigit() and seq.isdigit() and len(conv) <= 19 and len(seq) <= 10):
        raise InvalidInput("invalid_cursor", "after is a cursor returned as next_cursor.")
    return Cursor(int(conv), int(seq))


def view_transcript(
    uow: UnitOfWork,
    actor: Actor,
    client_id: int,
    *,
    participants: Sequence[Party] = (),
    after: Cursor | None = None,
    limit: int = DEFAULT_PAGE,
) -> Transcript:
    """TR1: one page of the client's transcript. Audited as a read of health information."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_limit", f"limit must be between 1 and {MAX_PAGE}.")
    ctx = access_client(uow, actor, client_id)
    if not policy.may_view_transcript(ctx.me, ctx.client):
        raise NotFound("client")
    pid = actor.practice_id
    every = uow.conversations.list_client_conversations(pid, ctx.client.id)
    chosen = tuple(dict.fromkeys(participants))
    shown = [c for c in every if set(chosen) <= {p.party for p in c.participants}]
    messages, next_cursor = _page(uow, pid, shown, after, limit)
    parties = {p.party for c in every for p in c.participants}
    parties.update(m.removed_by for m in messages if m.removed_by is not None)
    parties.update(m.sender for m in messages)
    people = describe(uow, pid, parties)
    everyone = sorted(
        (people[p.party] for c in every for p in c.participants),
        key=lambda i: (_KIND_ORDER.get(i.party.kind, 3), i.name.casefold(), i.party.id),
    )
    uow.audit.record(
        actor,
        "transcript.viewed",
        "client",
        ctx.client.id,
        participants=[str(p) for p in chosen],
        after=str(after) if after else None,
        conversation_ids=sorted({m.conversation_id for m in messages}),
        messages=len(messages),
    )
    uow.commit()
    return Transcript(
        client=ctx.client,
        participants=list(dict.fromkeys(everyone)),
        chosen=chosen,
        conversations=shown,
        people=people,
        messages=messages,
        next_cursor=next_cursor,
    )


def _page(
    uow: UnitOfWork,
    practice_id: PracticeId,
    conversations: Sequence[Conversation],
    after: Cursor | None,
    limit: int,
) -> tuple[list[Message], Cursor | None]:
    """Up to `limit` messages after the cursor, conversation by conversation, each by
    the unique (conversation_id, seq) index; one more is read to know if more follow."""
    out: list[Message] = []
    for conv in conversations:
        if after is not None and conv.id < after.conversation_id:
            continue
        after_seq = after.seq if after is not None and conv.id == after.conversation_id else 0
        out += uow.conversations.list_messages(
            practice_id,
            conv.id,
            before_seq=None,
            after_seq=after_seq,
            limit=limit + 1 - len(out),
            reveal_removed=True,
        )
        if len(out) > limit:
            out = out[:limit]
            return out, Cursor(out[-1].conversation_id, out[-1].seq)
    return out, None
