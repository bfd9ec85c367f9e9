"""The practice's records: transcripts (TR1, TR3) and chart notes (TR2).

See docs/records.md for the choices (participants, order, paging, removed messages).
"""

from fastapi import APIRouter, Query

from confide.services import chart_notes, transcripts
from confide.web.api.schemas import (
    ChartNoteIn,
    ChartNoteListOut,
    ChartNoteOut,
    PathId,
    TranscriptConversationOut,
    TranscriptMessageOut,
    TranscriptOut,
    record_party,
)
from confide.web.deps import CurrentActor, RuntimeDep

router = APIRouter(tags=["records"])


@router.get("/clients/{client_id}/transcript")
def view_transcript(
    client_id: PathId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    participants: str = Query("", max_length=2000, description="member:ID,contact:ID,…"),
    after: str | None = Query(None, max_length=40, description="a next_cursor"),
    limit: int = Query(transcripts.DEFAULT_PAGE, ge=1, le=transcripts.MAX_PAGE),
) -> TranscriptOut:
    """TR1: the client's conversations in order, removed messages included and marked.
    Audited (RC1)."""
    chosen = transcripts.parse_participants(participants)
    cursor = transcripts.parse_cursor(after) if after else None
    with runtime.write() as uow:
        t = transcripts.view_transcript(
            uow, actor, client_id, participants=chosen, after=cursor, limit=limit
        )
    return TranscriptOut(
        client_id=t.client.id,
        participants=[p for p in map(record_party, t.participants) if p is not None],
        chosen=[str(p) for p in t.chosen],
        conversations=[
            TranscriptConversationOut(
                id=c.id,
                participants=[
                    p
                    for p in (record_party(t.people.get(x.party)) for x in c.participants)
                    if p is not None
                ],
                last_activity_at=c.last_activity_at,
            )
            for c in t.conversations
        ],
        messages=[TranscriptMessageOut.of(m, t.people) for m in t.messages],
        next_cursor=str(t.next_cursor) if t.next_cursor else None,
    )


@router.post("/clients/{client_id}/chart-notes", status_code=201)
def copy_to_chart_note(
    client_id: PathId, body: ChartNoteIn, actor: CurrentActor, runtime: RuntimeDep
) -> ChartNoteOut:
    """TR2: copy transcript messages into a new chart note on the client's record."""
    with runtime.write() as uow:
        view = chart_notes.copy_to_chart_note(uow, actor, client_id, message_ids=body.message_ids)
    return ChartNoteOut.of(view.note, view.created_by)


@router.get("/clients/{client_id}/chart-notes")
def list_chart_notes(
    client_id: PathId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    limit: int = Query(50, ge=1, le=chart_notes.MAX_PAGE),
    before_id: int | None = Query(None, ge=1, le=2**62),
) -> ChartNoteListOut:
    """The client's chart notes, newest first. Audited (RC1)."""
    with runtime.write() as uow:
        views = chart_notes.list_chart_notes(
            uow, actor, client_id, limit=limit, before_id=before_id
        )
    return ChartNoteListOut(
        chart_notes=[ChartNoteOut.of(v.note, v.created_by) for v in views],
        next_before_id=views[-1].note.id if len(views) == limit else None,
    )
