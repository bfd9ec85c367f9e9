"""Announcements to clients (AN1, plus plan). See docs/records.md ("Announcements")."""

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from confide.domain.announcements import Audience
from confide.services import announcements
from confide.services.announcements import AnnouncementView
from confide.web.api.schemas import In, Text
from confide.web.deps import CurrentActor, RuntimeDep

router = APIRouter(tags=["announcements"])


class AnnouncementIn(In):
    audience: Literal["all_clients", "my_clients"]
    text: Text


class AuthorOut(BaseModel):
    id: int
    name: str
    label: str


class AnnouncementOut(BaseModel):
    id: int
    audience: Literal["all_clients", "my_clients"]
    recipients: int
    text: str | None  # null only when the stored text failed its integrity check
    created_at: datetime
    author: AuthorOut | None

    @classmethod
    def of(cls, view: AnnouncementView) -> "AnnouncementOut":
        a, who = view.announcement, view.author
        return cls(
            id=a.id,
            audience=a.audience.value,
            recipients=a.recipients,
            text=a.text,
            created_at=a.created_at,
            author=AuthorOut(id=a.author_id, name=who.name, label=who.label) if who else None,
        )


class AnnouncementListOut(BaseModel):
    announcements: list[AnnouncementOut]
    next_before_id: int | None


@router.post("/announcements", status_code=201)
def send_announcement(
    body: AnnouncementIn, actor: CurrentActor, runtime: RuntimeDep
) -> AnnouncementOut:
    """AN1: an announcement to all active clients (account owner, practice managers) or
    to the sender's own active clients (a clinician). Clients cannot reply to it."""
    with runtime.write() as uow:
        view = announcements.send_announcement(
            uow, actor, audience=Audience(body.audience), text=body.text
        )
    return AnnouncementOut.of(view)


@router.get("/announcements")
def list_announcements(
    actor: CurrentActor,
    runtime: RuntimeDep,
    limit: int = Query(50, ge=1, le=announcements.MAX_PAGE),
    before_id: int | None = Query(None, ge=1, le=2**62),
) -> AnnouncementListOut:
    """A client's (or contact's) announcements in the portal; for the team, the ones
    sent (all of them for the account owner and practice managers). Newest first."""
    with runtime.write() as uow:
        views = announcements.list_announcements(uow, actor, before_id=before_id, limit=limit)
    return AnnouncementListOut(
        announcements=[AnnouncementOut.of(v) for v in views],
        next_before_id=views[-1].announcement.id if len(views) == limit else None,
    )
