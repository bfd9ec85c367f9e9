"""A practice's sign-in settings (PA4, PA5, PA3 for team members): require a second
factor, the idle timeout (5-60 minutes), and OIDC sign-in for team members.

Every team member of the practice may read them (they must know whether they have to
enroll). The account owner changes the second-factor requirement and OIDC for team
members; whoever may change practice settings changes the idle timeout.
"""

from confide.domain import policy, signin
from confide.domain.actors import Actor
from confide.domain.errors import Forbidden, InvalidInput
from confide.domain.signin import SecuritySettings
from confide.services.access import acting_member, require
from confide.store.uow import UnitOfWork


def get_security_settings(uow: UnitOfWork, actor: Actor) -> SecuritySettings:
    acting_member(uow, actor)
    return uow.signin.get_security_settings(actor.practice_id)


def set_security_settings(
    uow: UnitOfWork,
    actor: Actor,
    *,
    require_second_factor: bool | None = None,
    session_idle_minutes: int | None = None,
    members_may_use_oidc: bool | None = None,
) -> SecuritySettings:
    me = acting_member(uow, actor).member
    if require_second_factor is not None or members_may_use_oidc is not None:
        require(signin.may_change_security_settings(me))
    if session_idle_minutes is not None:
        require(policy.may_change_practice_settings(me))
        if not signin.IDLE_MINUTES_MIN <= session_idle_minutes <= signin.IDLE_MINUTES_MAX:
            raise InvalidInput(
                "invalid_idle_minutes",
                f"The idle timeout is {signin.IDLE_MINUTES_MIN} to "
                f"{signin.IDLE_MINUTES_MAX} minutes.",
            )
    if require_second_factor and not uow.signin.has_second_factor(actor.practice_id, me.id):
        # Turning the requirement on without one's own second factor would lock the
        # owner out of everything but enrollment at once: enroll first.
        raise Forbidden(
            "enroll_second_factor_first",
            "Set up your own second factor before requiring one for the practice.",
        )
    old = uow.signin.get_security_settings(actor.practice_id)
    new = SecuritySettings(
        require_second_factor=old.require_second_factor
        if require_second_factor is None
        else require_second_factor,
        session_idle_minutes=old.session_idle_minutes
        if session_idle_minutes is None
        else session_idle_minutes,
        members_may_use_oidc=old.members_may_use_oidc
        if members_may_use_oidc is None
        else members_may_use_oidc,
    )
    if new != old:
        uow.signin.put_security_settings(actor.practice_id, new)
        changes = {k: getattr(new, k) for k in vars(new) if getattr(new, k) != getattr(old, k)}
        uow.audit.record(
            actor, "practice.security_changed", "practice", actor.practice_id, **changes
        )
        # Open sockets read their sessions again at once: a second factor now required
        # closes those of members without one (PA4), a new idle limit applies (PA5).
        uow.outbox.add(actor.practice_id, "practice.security_changed")
    uow.commit()
    return new
