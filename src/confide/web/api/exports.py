"""The practice data export (EX1-EX6): request, follow, download, delete.

See docs/records.md ("Data export") for who, what the archive holds and the limits.
"""

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from confide.domain.exports import DataExport, ExportScope
from confide.services import exports
from confide.store.clock import utcnow
from confide.web.api.schemas import ErrorOut, Id, In, PathId
from confide.web.deps import CurrentActor, RuntimeDep

router = APIRouter(tags=["exports"])
GONE: dict[int | str, dict[str, object]] = {
    410: {"model": ErrorOut, "description": "Expired or deleted (`export_expired`)"}
}


class ExportIn(In):
    scope: Literal["practice", "clinician"] = "practice"
    clinician_id: Id | None = None
    # EX3: on by default; unticking it is audited and answered with a warning.
    password: bool = True


class ExportOut(BaseModel):
    id: int
    scope: Literal["practice", "clinician"]
    clinician_id: int | None
    requested_by: int
    password_protected: bool
    status: Literal["queued", "generating", "ready", "failed", "expired", "deleted"]
    progress: int
    error: str | None
    messages: int | None
    file_size: int | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    download_url: str | None

    @classmethod
    def of(cls, e: DataExport, *, now: datetime) -> "ExportOut":
        return cls(
            id=e.id,
            scope=e.scope.value,
            clinician_id=e.clinician_id,
            requested_by=e.requested_by,
            password_protected=e.password_protected,
            status=e.status.value,
            progress=e.progress,
            error=e.error,
            messages=e.messages,
            file_size=e.file_size,
            created_at=e.created_at,
            finished_at=e.finished_at,
            expires_at=e.expires_at,
            download_url=f"/api/v1/exports/{e.id}/download" if e.downloadable(now) else None,
        )


class ExportCreatedOut(BaseModel):
    export: ExportOut
    # Shown once, to the person who asked (EX3); Confide keeps no readable copy once
    # the archive is written.
    password: str | None
    warning: str | None


class ExportListOut(BaseModel):
    exports: list[ExportOut]


def _now() -> datetime:
    return utcnow()


@router.post("/exports", status_code=201)
def request_export(
    body: ExportIn, actor: CurrentActor, runtime: RuntimeDep, request: Request
) -> ExportCreatedOut:
    """EX1-EX3: queue an export of the practice (or of one clinician's clients). The
    password is in this answer only."""
    with runtime.write() as uow:
        made = exports.request_export(
            uow,
            actor,
            scope=ExportScope(body.scope),
            clinician_id=body.clinician_id,
            password_protected=body.password,
        )
    runner = getattr(request.app.state, "export_runner", None)
    if runner is not None:
        runner.wake()
    return ExportCreatedOut(
        export=ExportOut.of(made.export, now=_now()), password=made.password, warning=made.warning
    )


@router.get("/exports")
def list_exports(actor: CurrentActor, runtime: RuntimeDep) -> ExportListOut:
    """The practice's latest exports, newest first, with their state (EX4)."""
    with runtime.read() as uow:
        found = exports.list_exports(uow, actor)
    now = _now()
    return ExportListOut(exports=[ExportOut.of(e, now=now) for e in found])


@router.get("/exports/{export_id}")
def get_export(export_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> ExportOut:
    """One export's state: queued, generating (progress %), ready, failed (reason)."""
    with runtime.read() as uow:
        found = exports.get_export(uow, actor, export_id)
    return ExportOut.of(found, now=_now())


@router.get(
    "/exports/{export_id}/download",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The AES-256 zip",
        },
        **GONE,
    },
)
def download_export(export_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> FileResponse:
    """EX3: the archive, for a member with export permission, within 72 hours of being
    ready. Audited (`export.downloaded`) before a byte is sent."""
    with runtime.write() as uow:
        export, path = exports.begin_download(
            uow, actor, export_id, export_dir=runtime.settings.resolved_export_dir
        )
    return FileResponse(
        path,
        media_type="application/zip",
        filename=exports.download_name(export),
        headers={"Cache-Control": "no-store"},
    )


@router.delete("/exports/{export_id}", responses=GONE)
def delete_export(export_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> ExportOut:
    """Delete an export's archive now (or cancel it while queued or generating); the
    record of it stays (RC3). Audited (`export.deleted`)."""
    with runtime.write() as uow:
        done = exports.delete_export(
            uow, actor, export_id, export_dir=runtime.settings.resolved_export_dir
        )
    return ExportOut.of(done, now=_now())
