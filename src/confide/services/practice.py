"""The practice account and its messaging switches (EN1, EN4)."""

from confide.auth.passwords import Passwords
from confide.domain import policy
from confide.domain.actors import Actor, Via
from confide.domain.entities import AccessLevel, Plan, Practice, Role
from confide.domain.ids import MemberId, PracticeId
from confide.domain.text import prepare_email, prepare_name
from confide.services.access import acting_member, load_practice, require
from confide.store.uow import UnitOfWork


def create_practice(
    uow: UnitOfWork,
    passwords: Passwords,
    *,
    name: str,
    plan: Plan,
    owner_name: str,
    owner_email: str,
    owner_password: str,
    owner_access_level: AccessLevel | None = None,
    via: Via = Via.CLI,
) -> tuple[PracticeId, MemberId]:
    """A new practice with its account owner and its own data key (RC2).

    Called by operators (CLI, demo); the owner is the first team member.
    """
    practice_id = uow.practices.insert_practice(prepare_name(name, "practice name"), plan)
    uow.practices.insert_data_key(practice_id, uow.db.keys.new_wrapped_data_key(practice_id))
    roles = {Role.ACCOUNT_OWNER}
    if owner_access_level is not None:
        roles.add(Role.CLINICIAN)
    owner_id = uow.people.insert_member(
        practice_id,
        name=prepare_name(owner_name),
        email=prepare_email(owner_email),
        roles=roles,
        access_level=owner_access_level,
        password_hash=passwords.hash(owner_password),
    )
    actor = Actor.system(practice_id, via)
    uow.audit.record(actor, "practice.created", "practice", practice_id, plan=plan.value)
    uow.audit.record(actor, "member.added", "member", owner_id, roles=sorted(roles))
    uow.commit()
    return practice_id, owner_id


def get_practice(uow: UnitOfWork, actor: Actor) -> Practice:
    acting_member(uow, actor)
    return load_practice(uow, actor)


def set_messaging_switches(
    uow: UnitOfWork,
    actor: Actor,
    *,
    team: bool | None = None,
    clients: bool | None = None,
    auto_allow_new_clients: bool | None = None,
) -> Practice:
    """EN1: client messaging needs team messaging; switching team messaging off switches
    client messaging off too. EN4: the "allow for new clients" default."""
    me = acting_member(uow, actor)
    require(policy.may_change_practice_settings(me.member))
    practice = uow.practices.get_practice(actor.practice_id, for_update=True)
    if team is not None or clients is not None:
        require(policy.may_use_messaging(practice))
    if team is False and clients is True:
        require(policy.deny(policy.TEAM_MESSAGING_OFF))  # EN1: a contradictory request
    new_team = practice.team_messaging if team is None else team
    new_clients = practice.client_messaging if clients is None else clients
    if team is False:
        new_clients = False
    require(policy.may_set_practice_switches(practice, team=new_team, clients=new_clients))
    new_auto = (
        practice.auto_allow_new_clients
        if auto_allow_new_clients is None
        else auto_allow_new_clients
    )
    changes = {
        k: v
        for k, v, old in (
            ("team_messaging", new_team, practice.team_messaging),
            ("client_messaging", new_clients, practice.client_messaging),
            ("auto_allow_new_clients", new_auto, practice.auto_allow_new_clients),
        )
        if v != old
    }
    if changes:
        uow.practices.update_practice(actor.practice_id, **changes)
        uow.audit.record(
            actor, "practice.settings_changed", "practice", actor.practice_id, **changes
        )
        if changes.get("client_messaging") is False or changes.get("team_messaging") is False:
            uow.outbox.add(actor.practice_id, "practice.messaging_off", **changes)
    uow.commit()
    return uow.practices.get_practice(actor.practice_id)
