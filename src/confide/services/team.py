"""Team members: adding, roles and access levels, the EN2 box, supervision."""

from collections.abc import Iterable

from confide.auth.passwords import MIN_PASSWORD_CHARS, Passwords
from confide.domain import policy
from confide.domain.actors import Actor
from confide.domain.entities import AccessLevel, Member, Role
from confide.domain.errors import Forbidden, InvalidInput
from confide.domain.ids import MemberId
from confide.domain.text import prepare_away_text, prepare_email, prepare_name
from confide.services.access import acting_member, require
from confide.store.uow import UnitOfWork


def _check_roles(roles: Iterable[Role], access_level: AccessLevel | None) -> frozenset[Role]:
    role_set = frozenset(roles)
    if Role.ACCOUNT_OWNER in role_set:
        raise Forbidden("not_permitted", "A practice has exactly one account owner.")
    decision = policy.validate_roles(role_set, access_level)
    if not decision:
        raise InvalidInput(
            decision.code,
            {
                "roles_required": "Choose at least one role.",
                "access_level_required": "A clinician needs an access level.",
                "access_level_without_clinician": "An access level needs the clinician role.",
            }[decision.code],
        )
    return role_set


def _require_owner_for_export(actor: Member) -> None:
    """EX1's permission is granted and taken away by the account owner only, so a
    practice manager cannot give it to themselves."""
    if not actor.has(Role.ACCOUNT_OWNER):
        raise Forbidden("not_permitted", "Only the account owner grants the export permission.")


INVITATION_JOB = "signin.invitation"


def add_member(
    uow: UnitOfWork,
    actor: Actor,
    passwords: Passwords,
    *,
    name: str,
    email: str,
    roles: Iterable[Role],
    access_level: AccessLevel | None = None,
    export_client_data: bool = False,
    password: str | None = None,
) -> Member:
    me = acting_member(uow, actor)
    require(policy.may_manage_team(me.member))
    role_set = _check_roles(roles, access_level)
    if export_client_data and Role.PRACTICE_MANAGER not in role_set:
        raise InvalidInput(
            "export_needs_practice_manager",
            "Only practice managers can hold the export permission.",
        )
    if export_client_data:
        _require_owner_for_export(me.member)
    if password is not None and len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(
            "password_too_short", f"A password needs at least {MIN_PASSWORD_CHARS} characters."
        )
    member_id = uow.people.insert_member(
        actor.practice_id,
        name=prepare_name(name),
        email=prepare_email(email),
        roles=role_set,
        access_level=access_level,
        export_client_data=export_client_data,
        password_hash=passwords.hash(password) if password else None,
    )
    uow.audit.record(
        actor,
        "member.added",
        "member",
        member_id,
        roles=sorted(role_set),
        access_level=access_level,
    )
    if not password:  # invited: they choose their password from the emailed link
        uow.jobs.enqueue(actor.practice_id, INVITATION_JOB, {"member_id": member_id})
    uow.commit()
    return uow.people.get_member(actor.practice_id, member_id)


def list_members(uow: UnitOfWork, actor: Actor) -> list[Member]:
    acting_member(uow, actor)
    return uow.people.list_members(actor.practice_id)


def update_member(
    uow: UnitOfWork,
    actor: Actor,
    member_id: int,
    *,
    roles: Iterable[Role] | None = None,
    access_level: AccessLevel | None = None,
    export_client_data: bool | None = None,
    active: bool | None = None,
) -> Member:
    """Roles, access level, export permission, active (deactivating ends sessions)."""
    me = acting_member(uow, actor)
    target = uow.people.get_member(actor.practice_id, member_id)
    require(policy.may_change_member(me.member, target))
    changes: dict[str, object] = {}
    if roles is not None:
        new_roles = set(_check_roles(roles, access_level))
        if target.has(Role.ACCOUNT_OWNER):
            new_roles.add(Role.ACCOUNT_OWNER)
        changes["roles"] = ",".join(sorted(r.value for r in new_roles))
        changes["access_level"] = access_level.value if access_level else None
    if export_client_data is not None:
        role_set = set(roles) if roles is not None else target.roles
        if export_client_data and Role.PRACTICE_MANAGER not in role_set:
            raise InvalidInput(
                "export_needs_practice_manager",
                "Only practice managers can hold the export permission.",
            )
        if export_client_data != target.export_client_data:
            _require_owner_for_export(me.member)
            changes["export_client_data"] = export_client_data
    if active is not None:
        if target.has(Role.ACCOUNT_OWNER) and not active:
            raise Forbidden("not_permitted", "The account owner cannot be deactivated.")
        changes["active"] = active
    if changes:
        uow.people.update_member(actor.practice_id, target.id, **changes)
        uow.audit.record(actor, "member.changed", "member", target.id, **changes)
        if active is False:
            uow.sessions.end_sessions_of(actor.practice_id, target.party)
            uow.sessions.revoke_api_tokens_of(actor.practice_id, target.id)
            uow.outbox.add(actor.practice_id, "member.disabled", member_id=target.id)
        elif roles is not None:
            uow.outbox.add(actor.practice_id, "access.changed", member_id=target.id)
    uow.commit()
    return uow.people.get_member(actor.practice_id, target.id)


def set_member_messaging(uow: UnitOfWork, actor: Actor, member_id: int, *, enabled: bool) -> Member:
    """EN2: the "enabled for secure messaging" box."""
    me = acting_member(uow, actor)
    target = uow.people.get_member(actor.practice_id, member_id)
    require(policy.may_set_member_messaging(me.member, target))
    if target.messaging_enabled != enabled:
        uow.people.update_member(actor.practice_id, target.id, messaging_enabled=enabled)
        uow.audit.record(actor, "member.messaging_changed", "member", target.id, enabled=enabled)
        uow.outbox.add(
            actor.practice_id, "member.messaging_changed", member_id=target.id, enabled=enabled
        )
    uow.commit()
    return uow.people.get_member(actor.practice_id, target.id)


def set_supervision(
    uow: UnitOfWork, actor: Actor, *, supervisor_id: int, supervisee_id: int, on: bool
) -> None:
    me = acting_member(uow, actor)
    require(policy.may_manage_team(me.member))
    supervisor = uow.people.get_member(actor.practice_id, supervisor_id)
    supervisee = uow.people.get_member(actor.practice_id, supervisee_id)
    if not supervisor.has(Role.SUPERVISOR):
        raise InvalidInput("not_a_supervisor", "This team member is not a supervisor.")
    if supervisor.id == supervisee.id:
        raise InvalidInput("self_supervision", "A supervisor cannot supervise themselves.")
    uow.people.set_supervision(actor.practice_id, supervisor.id, supervisee.id, on)
    uow.audit.record(
        actor, "supervision.changed", "member", supervisor.id, supervisee_id=supervisee.id, on=on
    )
    if not on:
        uow.outbox.add(actor.practice_id, "access.changed", member_id=supervisor.id)
    uow.commit()


def set_away(uow: UnitOfWork, actor: Actor, *, on: bool | None, text: str | None) -> Member:
    """AW1, AW2: the acting member's away switch and text (no automatic replies, AW4)."""
    me = acting_member(uow, actor)
    require(policy.may_set_away(me.member))
    changes: dict[str, object] = {}
    if text is not None:
        changes["away_text"] = prepare_away_text(text)
    if on is not None and on != me.member.away_on:
        changes["away_on"] = on
    if changes:
        uow.people.update_member(actor.practice_id, MemberId(me.member.id), **changes)
        uow.audit.record(
            actor,
            "away.changed",
            "member",
            me.member.id,
            on=changes.get("away_on", me.member.away_on),
            text_changed="away_text" in changes,
        )
        uow.outbox.add(actor.practice_id, "away.changed", member_id=me.member.id)
    uow.commit()
    return uow.people.get_member(actor.practice_id, me.member.id)
