"""Practice settings, team members and away (EN1, EN2, EN4, AW1, AW2)."""

from fastapi import APIRouter

from confide.services import practice, team
from confide.web.api.schemas import (
    AwayIn,
    MemberIn,
    MemberMessagingIn,
    MemberOut,
    MemberPatch,
    MessagingSwitchesIn,
    PathId,
    PracticeOut,
    SupervisionIn,
)
from confide.web.deps import CurrentActor, RuntimeDep

router = APIRouter(tags=["practice"])


@router.get("/practice")
def get_practice(actor: CurrentActor, runtime: RuntimeDep) -> PracticeOut:
    with runtime.read() as uow:
        return PracticeOut.of(practice.get_practice(uow, actor))


@router.patch("/practice/messaging")
def set_messaging(
    body: MessagingSwitchesIn, actor: CurrentActor, runtime: RuntimeDep
) -> PracticeOut:
    """EN1 and EN4. Switching team messaging off also switches client messaging off."""
    with runtime.write() as uow:
        return PracticeOut.of(
            practice.set_messaging_switches(
                uow,
                actor,
                team=body.team_messaging,
                clients=body.client_messaging,
                auto_allow_new_clients=body.auto_allow_new_clients,
            )
        )


@router.get("/members")
def list_members(actor: CurrentActor, runtime: RuntimeDep) -> list[MemberOut]:
    with runtime.read() as uow:
        return [MemberOut.of(m) for m in team.list_members(uow, actor)]


@router.post("/members", status_code=201)
def add_member(body: MemberIn, actor: CurrentActor, runtime: RuntimeDep) -> MemberOut:
    with runtime.write() as uow:
        return MemberOut.of(
            team.add_member(
                uow,
                actor,
                runtime.passwords,
                name=body.name,
                email=body.email,
                roles=body.roles,
                access_level=body.access_level,
                export_client_data=body.export_client_data,
                password=body.password,
            )
        )


@router.patch("/members/{member_id}")
def update_member(
    member_id: PathId, body: MemberPatch, actor: CurrentActor, runtime: RuntimeDep
) -> MemberOut:
    with runtime.write() as uow:
        return MemberOut.of(
            team.update_member(
                uow,
                actor,
                member_id,
                roles=body.roles,
                access_level=body.access_level,
                export_client_data=body.export_client_data,
                active=body.active,
            )
        )


@router.put("/members/{member_id}/messaging")
def set_member_messaging(
    member_id: PathId, body: MemberMessagingIn, actor: CurrentActor, runtime: RuntimeDep
) -> MemberOut:
    """EN2: the member's "enabled for secure messaging" box."""
    with runtime.write() as uow:
        return MemberOut.of(team.set_member_messaging(uow, actor, member_id, enabled=body.enabled))


@router.put("/members/{member_id}/supervisees", status_code=204)
def set_supervision(
    member_id: PathId, body: SupervisionIn, actor: CurrentActor, runtime: RuntimeDep
) -> None:
    with runtime.write() as uow:
        team.set_supervision(
            uow, actor, supervisor_id=member_id, supervisee_id=body.supervisee_id, on=body.on
        )


@router.put("/me/away")
def set_away(body: AwayIn, actor: CurrentActor, runtime: RuntimeDep) -> MemberOut:
    """AW1, AW2: the signed-in member's away message."""
    with runtime.write() as uow:
        return MemberOut.of(team.set_away(uow, actor, on=body.on, text=body.text))
