"""Notification settings (NT1, NT3) and the emailed sign-in links' requests (PA2,
password reset). Schemas are here, not in schemas.py, to keep this part separate."""

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, StringConstraints

from confide.services import email_links, notifications
from confide.web.api.schemas import In
from confide.web.deps import CurrentActor, RuntimeDep, client_ip

router = APIRouter(tags=["notifications"])

EmailText = Annotated[str, StringConstraints(max_length=320)]


class PracticeNotificationsIn(In):
    name_practice: bool


class PracticeNotificationsOut(BaseModel):
    name_practice: bool


class MyNotificationsIn(In):
    email_new_messages: bool


class MyNotificationsOut(BaseModel):
    email_new_messages: bool


class LinkRequestIn(In):
    email: EmailText


class LinkRequestOut(BaseModel):
    status: Literal["accepted"] = "accepted"
    message: str


INSTANT_SIGN_IN_ANSWER = LinkRequestOut(
    message="If this address belongs to a client portal account, a sign-in link is on its way."
)
PASSWORD_RESET_ANSWER = LinkRequestOut(
    message="If this address belongs to a team member, a password reset link is on its way."
)


@router.get("/practice/notifications")
def get_practice_notifications(
    actor: CurrentActor, runtime: RuntimeDep
) -> PracticeNotificationsOut:
    """NT1: whether client emails name the practice (off by default)."""
    with runtime.read() as uow:
        return PracticeNotificationsOut(
            name_practice=notifications.get_practice_settings(uow, actor).name_practice
        )


@router.put("/practice/notifications")
def set_practice_notifications(
    body: PracticeNotificationsIn, actor: CurrentActor, runtime: RuntimeDep
) -> PracticeNotificationsOut:
    """NT1: "name the practice in notifications"; practice settings editors only."""
    with runtime.write() as uow:
        done = notifications.set_name_practice(uow, actor, on=body.name_practice)
        return PracticeNotificationsOut(name_practice=done.name_practice)


@router.get("/me/notifications")
def get_my_notifications(actor: CurrentActor, runtime: RuntimeDep) -> MyNotificationsOut:
    """NT3: "email me about new secure messages" (team members; on by default)."""
    with runtime.read() as uow:
        return MyNotificationsOut(email_new_messages=notifications.get_email_preference(uow, actor))


@router.put("/me/notifications")
def set_my_notifications(
    body: MyNotificationsIn, actor: CurrentActor, runtime: RuntimeDep
) -> MyNotificationsOut:
    with runtime.write() as uow:
        return MyNotificationsOut(
            email_new_messages=notifications.set_email_preference(
                uow, actor, on=body.email_new_messages
            )
        )


@router.post(
    "/auth/instant-sign-in", status_code=202, responses={429: {"description": "Rate limited"}}
)
def request_instant_sign_in(
    body: LinkRequestIn, request: Request, runtime: RuntimeDep
) -> LinkRequestOut:
    """PA2: email an instant sign-in link. The answer is the same, byte for byte,
    whether or not the address is known; the email is sent by a job."""
    with runtime.write() as uow:
        email_links.request_instant_sign_in(
            uow,
            email=body.email,
            ip=client_ip(request),
            ip_limit=runtime.settings.link_requests_per_ip,
        )
    return INSTANT_SIGN_IN_ANSWER


@router.post(
    "/auth/password-reset", status_code=202, responses={429: {"description": "Rate limited"}}
)
def request_password_reset(
    body: LinkRequestIn, request: Request, runtime: RuntimeDep
) -> LinkRequestOut:
    """Team members: email a password reset link (the same answer for every address)."""
    with runtime.write() as uow:
        email_links.request_password_reset(
            uow,
            email=body.email,
            ip=client_ip(request),
            ip_limit=runtime.settings.link_requests_per_ip,
        )
    return PASSWORD_RESET_ANSWER
