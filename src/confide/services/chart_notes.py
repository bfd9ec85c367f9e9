"""Chart notes (TR2): messages ticked in a transcript, copied into a note on the
client's record.

- Who writes: `policy.may_write_chart_note` (the client's editors; billers read
  transcripts but do not write to the record: 403 `not_permitted`). Who reads: everyone
  with access to the client, like the transcript (TR1). Anyone else: the NotFound of a
  missing client (PM7).
- What may be copied: 1 to `MAX_MESSAGES` messages of the client's conversations (the
  ones a transcript shows). An id of another client's conversation, of a team-only one
  (TR3) or of nothing answers the same NotFound ("No such message.").
- Removed messages may be copied: they are in the record (MS6, RC3). They keep their
  text and are marked removed by whom and when.
- A copy: senders' names and labels, times and texts are copied when the note is made,
  so the note stays as it was. Entries are in transcript order (conversation, then
  seq), whatever order the ids came in; repeated ids count once.
- Audited: `chart_note.created` and `chart_notes.viewed` (RC1), ids only.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from confide.domain import policy
from confide.domain.actors import Actor, Party
from confide.domain.errors import InvalidInput, NotFound
from confide.domain.ids import MemberId
from confide.domain.records import ChartNote, ChartNoteEntry
from confide.services.access import access_client, require
from confide.services.directory import PartyInfo, describe, member_info
from confide.store.uow import UnitOfWork

MAX_MESSAGES = 200
MAX_PAGE = 100


@dataclass(frozen=True)
class ChartNoteView:
    note: ChartNote
    created_by: PartyInfo | None  # the member as they are named now


def copy_to_chart_note(
    uow: UnitOfWork, actor: Actor, client_id: int, *, message_ids: Sequence[int]
) -> ChartNoteView:
    """TR2: a new chart note on the client's record holding copies of the messages."""
    ids = list(dict.fromkeys(message_ids))
    if not 1 <= len(ids) <= MAX_MESSAGES:
        raise InvalidInput(
            "invalid_message_ids", f"Choose between 1 and {MAX_MESSAGES} messages to copy."
        )
    ctx = access_client(uow, actor, client_id)
    require(policy.may_write_chart_note(ctx.me, ctx.client))
    pid = actor.practice_id
    messages = uow.conversations.list_client_messages_by_id(pid, ctx.client.id, ids)
    if len(messages) != len(ids):
        raise NotFound("message")
    people = describe(
        uow,
        pid,
        {m.sender for m in messages} | {m.removed_by for m in messages if m.removed_by},
    )
    entries = [
        ChartNoteEntry(
            message_id=m.id,
            conversation_id=m.conversation_id,
            seq=m.seq,
            sender=m.sender,
            sender_name=people[m.sender].name,
            sender_label=people[m.sender].label,
            sent_at=m.created_at,
            text=m.text,
            removed_at=m.removed_at,
            removed_by=m.removed_by,
            removed_by_name=people[m.removed_by].name if m.removed_by else None,
        )
        for m in messages
    ]
    note = uow.records.insert_chart_note(
        pid, ctx.client.id, created_by=ctx.me.member.id, entries=entries
    )
    uow.audit.record(
        actor,
        "chart_note.created",
        "chart_note",
        note.id,
        client_id=ctx.client.id,
        message_ids=[e.message_id for e in entries],
    )
    uow.commit()
    return ChartNoteView(note, member_info(ctx.me.member))


def list_chart_notes(
    uow: UnitOfWork, actor: Actor, client_id: int, *, limit: int = 50, before_id: int | None = None
) -> list[ChartNoteView]:
    """The client's chart notes, newest first (`before_id` pages back). Audited."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_limit", f"limit must be between 1 and {MAX_PAGE}.")
    ctx = access_client(uow, actor, client_id)
    if not policy.may_view_transcript(ctx.me, ctx.client):
        raise NotFound("client")
    notes = uow.records.list_chart_notes(
        actor.practice_id, ctx.client.id, limit=limit, before_id=before_id
    )
    uow.audit.record(
        actor, "chart_notes.viewed", "client", ctx.client.id, note_ids=[n.id for n in notes]
    )
    creators = _members(uow, actor, {n.created_by for n in notes})
    uow.commit()
    return [ChartNoteView(n, creators.get(n.created_by)) for n in notes]


def _members(uow: UnitOfWork, actor: Actor, ids: set[MemberId]) -> dict[MemberId, PartyInfo]:
    info = describe(uow, actor.practice_id, [Party.member(i) for i in ids])
    return {MemberId(p.id): i for p, i in info.items()}
