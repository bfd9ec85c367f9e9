"""Settings > Data export (EX1-EX6) in the web app, over the same service as the JSON
API (web/api/exports.py).

- Who: the account owner and practice managers with `export_client_data`
  (`policy.may_export`); other team members are refused 403 by the service, clients
  and contacts get the 404 of a page that does not exist (PM7).
- Requesting: scope all clients or one clinician's; "Protect with a password" is ticked
  by default (EX3). The answer to the POST is the page itself, holding the password
  once, with a copy button (static/js/app.js): it never goes into a URL, a redirect or
  the list, and Confide keeps no readable copy once the archive is written.
- Following: the list shows queued, generating N %, ready (download, expiry), failed
  (reason); while one is queued or generating, htmx polls `/settings/export/list`.
- Downloading: `/settings/export/{id}/download`, the session and export permission,
  within 72 hours; audited by the service before a byte is sent.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, Response

from confide.domain.entities import Member
from confide.domain.exports import DataExport, ExportScope, ExportStatus
from confide.services import exports, team
from confide.store.clock import utcnow
from confide.store.uow import UnitOfWork
from confide.web.api.schemas import PathId
from confide.web.deps import RuntimeDep
from confide.web.pages.common import Csrf, PageActor, go, member_nav, render

router = APIRouter(include_in_schema=False)

# Readable words for the reason codes a failed export carries (jobs/exports.py).
REASONS = {
    "key_unreadable": "The practice's stored data could not be decrypted (key_unreadable).",
    "storage_error": "The server could not write the archive: disk full or not writable "
    "(storage_error).",
    "internal_error": "The export stopped on an unexpected error (internal_error).",
    "interrupted": "The server stopped while writing it; it will be taken up again (interrupted).",
}


def _state(uow: UnitOfWork, actor: PageActor) -> dict[str, object]:
    found = exports.list_exports(uow, actor)  # 403 for members without EX1's permission
    members: dict[int, Member] = {m.id: m for m in team.list_members(uow, actor)}
    return {
        "exports": found,
        "members": members,
        "clinicians": sorted(
            (m for m in members.values() if m.active and m.is_clinician),
            key=lambda m: m.name.casefold(),
        ),
        "busy": any(e.status in (ExportStatus.QUEUED, ExportStatus.GENERATING) for e in found),
        "now": utcnow(),
        "reasons": REASONS,
        "scope_text": scope_text,
    }


def _page(request: Request, actor: PageActor, runtime: RuntimeDep, **extra: object) -> Response:
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        state = _state(uow, actor)
    return render(
        request,
        "settings_export.html",
        nav=nav,
        active="settings",
        section="export",
        **state,
        **{"made": None, "password": None, "warning": None, **extra},
    )


@router.get("/settings/export")
def export_page(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    return _page(request, actor, runtime)


@router.get("/settings/export/list")
def export_list(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    """The list alone, polled by htmx while an export is queued or generating (EX4)."""
    with runtime.read() as uow:
        state = _state(uow, actor)
    return render(request, "_exports.html", **state)


@router.post("/settings/export", dependencies=[Csrf])
def request_export(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    scope: Annotated[Literal["practice", "clinician"], Form()] = "practice",
    clinician_id: Annotated[int | None, Form(ge=1, le=2**62)] = None,
    protect: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    """EX1-EX3. The page is the answer (not a redirect): the password is shown here,
    once, to the person who asked."""
    with runtime.write() as uow:
        made = exports.request_export(
            uow,
            actor,
            scope=ExportScope(scope),
            clinician_id=clinician_id if scope == "clinician" else None,
            password_protected=protect == "on",
        )
    runner = getattr(request.app.state, "export_runner", None)
    if runner is not None:
        runner.wake()
    return _page(
        request, actor, runtime, made=made.export, password=made.password, warning=made.warning
    )


@router.get("/settings/export/{export_id}/download")
def download_export(export_id: PathId, actor: PageActor, runtime: RuntimeDep) -> FileResponse:
    """EX3: the archive, within 72 hours, for a member with export permission."""
    with runtime.write() as uow:
        export, path = exports.begin_download(
            uow, actor, export_id, export_dir=runtime.settings.resolved_export_dir
        )
    return FileResponse(
        path,
        media_type="application/zip",
        filename=exports.download_name(export),
        headers={"Cache-Control": "no-store", "Referrer-Policy": "same-origin"},
    )


@router.post("/settings/export/{export_id}/delete", dependencies=[Csrf])
def delete_export(
    request: Request, export_id: PathId, actor: PageActor, runtime: RuntimeDep
) -> Response:
    """Delete an archive before its 72 hours (or cancel a queued or running export)."""
    with runtime.write() as uow:
        exports.delete_export(
            uow, actor, export_id, export_dir=runtime.settings.resolved_export_dir
        )
    return go(request, "/settings/export")


def scope_text(e: DataExport, members: dict[int, Member]) -> str:
    if e.scope is ExportScope.PRACTICE:
        return "All clients"
    who = members.get(e.clinician_id or 0)
    return f"Clients of {who.name}" if who else "One clinician's clients"
