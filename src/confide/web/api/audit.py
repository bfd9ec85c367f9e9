"""The audit trail (RC1, issue 7): view, filter and export the practice's audit log.

See docs/security.md ("The audit trail") for who, the filters and the CSV format.
"""

from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from confide.services import audit_trail
from confide.web.api.schemas import AuditEventOut, AuditLogOut
from confide.web.deps import CurrentActor, RuntimeDep

router = APIRouter(tags=["audit"])

_ACTOR = Query(None, max_length=60, description="member:12, client:7, contact:3, or a kind")
_ACTION = Query(None, max_length=60, description='message.sent, or a prefix such as "message."')
_TARGET = Query(None, max_length=60, description="conversation:5, client:7, … or a kind")
_FROM = Query(None, alias="from", max_length=40, description="ISO 8601 with offset, inclusive")
_TO = Query(None, max_length=40, description="ISO 8601 with offset, exclusive")
_BEFORE = Query(None, ge=1, le=2**62, description="a next_before_seq: older events")
_LINES_PER_CHUNK = 500


def _filters(
    actor: str | None, action: str | None, target: str | None, at_from: str | None, to: str | None
) -> audit_trail.AuditFilters:
    return audit_trail.build_filters(
        actor=actor, action=action, target=target, at_from=at_from, at_to=to
    )


@router.get("/audit")
def view_audit_log(
    me: CurrentActor,
    runtime: RuntimeDep,
    actor: str | None = _ACTOR,
    action: str | None = _ACTION,
    target: str | None = _TARGET,
    at_from: str | None = _FROM,
    to: str | None = _TO,
    before_seq: int | None = _BEFORE,
    limit: int = Query(audit_trail.DEFAULT_PAGE, ge=1, le=audit_trail.MAX_PAGE),
) -> AuditLogOut:
    """The practice's audit log, newest first, filtered; for the account owner and
    practice managers. Audited (`audit_log.viewed`)."""
    filters = _filters(actor, action, target, at_from, to)
    with runtime.write() as uow:
        page = audit_trail.list_audit_events(uow, me, filters, before_seq=before_seq, limit=limit)
    return AuditLogOut(
        events=[AuditEventOut.of(e) for e in page.entries],
        next_before_seq=page.next_before_seq,
    )


def _chunks(lines: Iterable[str]) -> Iterator[str]:
    """A few hundred lines per chunk: one worker-thread hop each, not one per line."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= _LINES_PER_CHUNK:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


@router.get(
    "/audit.csv",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}
    },
)
def export_audit_log(
    me: CurrentActor,
    runtime: RuntimeDep,
    actor: str | None = _ACTOR,
    action: str | None = _ACTION,
    target: str | None = _TARGET,
    at_from: str | None = _FROM,
    to: str | None = _TO,
    before_seq: int | None = _BEFORE,
) -> StreamingResponse:
    """The filtered log as a CSV download (every matching row, newest first). The export
    is authorized and audited (`audit_log.exported`) in a short write transaction before
    anything is sent; the rows are then read in batches, each in its own read
    transaction, so SQLite's writer lock is never held while the response streams."""
    filters = _filters(actor, action, target, at_from, to)
    with runtime.write() as uow:
        export = audit_trail.begin_export(uow, me, filters, before_seq=before_seq)
    return StreamingResponse(
        _chunks(audit_trail.csv_lines(export, runtime.read)),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename}"',
            "Cache-Control": "no-store",
        },
    )
