"""The client's records in the web app: transcripts (TR1, TR3) and chart notes (TR2).

The pages call the same services as the JSON API (web/api/records.py), so who sees a
transcript follows access to the client exactly (`policy.may_view_transcript`), team-only
conversations never appear (TR3), and every view and every chart note is audited by the
service (RC1). Participants and the page cursor travel in the query string as ids only
(`member:12`, `3:41`): no name, no text.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import Field

from confide.domain import policy
from confide.domain.errors import InvalidInput
from confide.services import chart_notes, transcripts
from confide.services.access import access_client
from confide.web.api.schemas import PathId
from confide.web.deps import RuntimeDep
from confide.web.pages.common import Csrf, PageActor, go, member_nav, render

router = APIRouter(include_in_schema=False)
PAGE = 100  # messages per transcript page
MAX_PARTICIPANTS_TEXT = 2000  # as the API's `participants`
MessageIds = list[Annotated[int, Field(ge=1, le=2**62)]]


@router.get("/clients/{client_id}/transcript")
def transcript_page(
    request: Request,
    client_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    p: Annotated[list[str], Query()] = [],  # noqa: B006
    after: str = Query("", max_length=40),
) -> Response:
    """TR1: the client's conversations in order, participants chosen by ticking them;
    removed messages shown with their text, marked removed by whom and when."""
    joined = ",".join(p)
    if len(joined) > MAX_PARTICIPANTS_TEXT:
        raise InvalidInput("invalid_participants", "Too many participants chosen.")
    chosen = transcripts.parse_participants(joined)
    cursor = transcripts.parse_cursor(after) if after else None
    with runtime.write() as uow:
        nav = member_nav(uow, actor)
        ctx = access_client(uow, actor, client_id)  # NotFound without access (PM7)
        may_copy = bool(policy.may_write_chart_note(ctx.me, ctx.client))
        t = transcripts.view_transcript(
            uow, actor, client_id, participants=chosen, after=cursor, limit=PAGE
        )
    query = [("p", str(x)) for x in t.chosen]
    return render(
        request,
        "transcript.html",
        nav=nav,
        active="clients",
        t=t,
        c=t.client,
        chosen={str(x) for x in t.chosen},
        conversations={conv.id: conv for conv in t.conversations},
        may_copy=may_copy,
        first_page=cursor is None,
        first_query=query,
        next_query=[*query, ("after", str(t.next_cursor))] if t.next_cursor else None,
    )


@router.post("/clients/{client_id}/chart-notes", dependencies=[Csrf])
def copy_to_chart_note(
    request: Request,
    client_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    message_id: Annotated[MessageIds, Form()] = [],  # noqa: B006
) -> Response:
    """TR2: the ticked messages become a new chart note on the client's record."""
    with runtime.write() as uow:
        view = chart_notes.copy_to_chart_note(uow, actor, client_id, message_ids=message_id)
    return go(request, f"/clients/{client_id}?noted={view.note.id}#chart-notes")
