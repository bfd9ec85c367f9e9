"""Settings, for those allowed: Messaging (the practice switches EN1 and EN4, each team
member's "enabled for secure messaging" box EN2) and Team members (roles, access
levels, the export permission, active). The services decide who may change what; the
pages only hide what a person cannot use.

Notifications: every team member's own email (NT3) and push (NT4) preferences, and for
those who change practice settings, "name the practice in notifications" (NT1).
"""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from confide.domain import policy, signin
from confide.domain.entities import AccessLevel, Role
from confide.domain.errors import InvalidInput
from confide.services import notifications, practice, push, second_factor, team
from confide.services.access import acting_member
from confide.services.directory import ROLE_LABELS
from confide.web.api.schemas import PathId
from confide.web.deps import RuntimeDep
from confide.web.pages.common import Csrf, PageActor, go, member_nav, render

router = APIRouter(include_in_schema=False)
Flag = Annotated[str, Form(max_length=5)]

ACCESS_LABELS = {
    AccessLevel.ENTIRE_PRACTICE: "Entire practice",
    AccessLevel.FULL_CLIENT_LIST: "Full client list",
    AccessLevel.BILLING: "Billing",
    AccessLevel.BASIC: "Basic",
}


def _on(value: str) -> bool:
    return value == "on"


@router.get("/settings")
def settings_home(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    with runtime.read() as uow:
        me = acting_member(uow, actor).member
    if policy.may_change_practice_settings(me):
        return go(request, "/settings/messaging")
    return go(request, "/settings/team")


@router.get("/settings/messaging")
def messaging_page(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        me = acting_member(uow, actor).member
        p = practice.get_practice(uow, actor)
        members = team.list_members(uow, actor)
    return render(
        request,
        "settings_messaging.html",
        nav=nav,
        active="settings",
        section="messaging",
        practice=p,
        members=[m for m in members if m.active],
        may_change=bool(policy.may_change_practice_settings(me)),
        may_box={m.id: bool(policy.may_set_member_messaging(me, m)) for m in members},
        saved=request.query_params.get("saved") == "1",
    )


@router.post("/settings/messaging", dependencies=[Csrf])
def set_switches(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    team_messaging: Flag = "",
    client_messaging: Flag = "",
    auto_allow_new_clients: Flag = "",
) -> Response:
    """EN1 (client messaging needs team messaging; team off turns clients off) and EN4."""
    team_on, clients_on = _on(team_messaging), _on(client_messaging)
    if clients_on and not team_on:
        raise InvalidInput(
            "team_messaging_off",
            "Turn on messaging with the team before messaging with clients.",
        )
    with runtime.write() as uow:
        practice.set_messaging_switches(
            uow,
            actor,
            team=team_on,
            clients=clients_on,
            auto_allow_new_clients=_on(auto_allow_new_clients),
        )
    return go(request, "/settings/messaging?saved=1")


@router.post("/settings/messaging/members/{member_id}", dependencies=[Csrf])
def set_member_box(
    request: Request, member_id: PathId, actor: PageActor, runtime: RuntimeDep, enabled: Flag = ""
) -> Response:
    """EN2: a team member's "enabled for secure messaging" box."""
    with runtime.write() as uow:
        team.set_member_messaging(uow, actor, member_id, enabled=_on(enabled))
    return go(request, "/settings/messaging?saved=1")


@router.get("/settings/team")
def team_page(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        me = acting_member(uow, actor).member
        members = team.list_members(uow, actor)
        with_second_factor = second_factor.members_with_second_factor(uow, actor)
        required = second_factor.get_status(uow, actor).required_by_practice
    return render(
        request,
        "settings_team.html",
        nav=nav,
        active="settings",
        section="team",
        members=members,
        role_labels=ROLE_LABELS,
        access_labels=ACCESS_LABELS,
        may_manage=bool(policy.may_manage_team(me)),
        may_change={m.id: bool(policy.may_change_member(me, m)) for m in members},
        may_settings=bool(policy.may_change_practice_settings(me)),
        second_factor=with_second_factor,
        require_second_factor=required,
        may_reset={m.id: bool(signin.may_reset_second_factor(me, m)) for m in members},
        error="",
        saved=request.query_params.get("saved") == "1",
    )


def _roles(values: list[str]) -> list[Role]:
    try:
        return [Role(v) for v in values]
    except ValueError:
        raise InvalidInput("invalid_role", "Choose roles from the list.") from None


def _level(value: str) -> AccessLevel | None:
    if not value:
        return None
    try:
        return AccessLevel(value)
    except ValueError:
        raise InvalidInput(
            "invalid_access_level", "Choose an access level from the list."
        ) from None


@router.post("/settings/team/{member_id}", dependencies=[Csrf])
def change_member(
    request: Request,
    member_id: PathId,
    actor: PageActor,
    runtime: RuntimeDep,
    roles: Annotated[list[str], Form(max_length=10)],
    access_level: Annotated[str, Form(max_length=40)] = "",
    export_client_data: Flag = "",
    active: Flag = "",
) -> Response:
    """Roles, access level, the export permission and active (managers only)."""
    role_list = _roles(roles)
    with runtime.write() as uow:
        team.update_member(
            uow,
            actor,
            member_id,
            roles=role_list,
            access_level=_level(access_level) if Role.CLINICIAN in role_list else None,
            export_client_data=_on(export_client_data),
            active=_on(active),
        )
    return go(request, "/settings/team?saved=1")


@router.post("/settings/team", dependencies=[Csrf])
def add_member(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    name: Annotated[str, Form(max_length=400)],
    email: Annotated[str, Form(max_length=320)],
    roles: Annotated[list[str], Form(max_length=10)],
    access_level: Annotated[str, Form(max_length=40)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    role_list = _roles(roles)
    with runtime.write() as uow:
        team.add_member(
            uow,
            actor,
            runtime.passwords,
            name=name,
            email=email,
            roles=role_list,
            access_level=_level(access_level) if Role.CLINICIAN in role_list else None,
            password=password or None,
        )
    return go(request, "/settings/team?saved=1")


@router.get("/settings/notifications")
def notifications_page(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        me = acting_member(uow, actor).member
        email_on = notifications.get_email_preference(uow, actor)
        push_on = push.get_preferences(uow, actor).get("new_message", True)
        name_practice = notifications.get_practice_settings(uow, actor).name_practice
    return render(
        request,
        "settings_notifications.html",
        nav=nav,
        active="settings",
        section="notifications",
        email_on=email_on,
        push_on=push_on,
        name_practice=name_practice,
        may_change_practice=bool(policy.may_change_practice_settings(me)),
        saved=request.query_params.get("saved") == "1",
    )


@router.post("/settings/notifications", dependencies=[Csrf])
def set_my_notifications(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    email_new_messages: Flag = "",
    push_new_message: Flag = "",
) -> Response:
    """NT3 (email after 10 minutes unread) and NT4 ("New message" pushes): one's own."""
    with runtime.write() as uow:
        notifications.set_email_preference(uow, actor, on=_on(email_new_messages))
    with runtime.write() as uow:
        push.set_preferences(uow, actor, {"new_message": _on(push_new_message)})
    return go(request, "/settings/notifications?saved=1")


@router.post("/settings/notifications/practice", dependencies=[Csrf])
def set_practice_notifications(
    request: Request, actor: PageActor, runtime: RuntimeDep, name_practice: Flag = ""
) -> Response:
    """NT1: whether client emails name the practice (off by default)."""
    with runtime.write() as uow:
        notifications.set_name_practice(uow, actor, on=_on(name_practice))
    return go(request, "/settings/notifications?saved=1")
