"""The TOTP second factor of team members (PA4): enrollment, recovery codes, disabling
with re-authentication, and the second step of a two-step sign-in.

- The secret is encrypted at rest with the practice's data key (store/repos/signin.py);
  it is shown once, at enrollment, as text and as an SVG QR code.
- A code is accepted once: the newest used time step is kept and a code of that step
  or an earlier one is refused (no replay within the ±30 s window).
- 10 single-use recovery codes (~99 random bits each), shown once; only hashes are
  stored (PA7).
- Failed codes count towards the account's sign-in lockout, like wrong passwords.
"""

from dataclasses import dataclass

from confide.auth import totp
from confide.auth.passwords import MAX_PASSWORD_CHARS, Passwords
from confide.auth.tokens import token_hash
from confide.domain import policy, signin
from confide.domain.actors import Actor, Via
from confide.domain.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated
from confide.domain.ids import MemberId, PracticeId
from confide.services.access import acting_member, require
from confide.services.sessions import (
    SessionPolicy,
    account_key,
    new_member_session,
    record_failure,
    refuse_if_locked,
)
from confide.store.clock import utcnow
from confide.store.uow import UnitOfWork

ISSUER = "Confide"


@dataclass(frozen=True)
class SecondFactorStatus:
    enrolled: bool
    enrollment_pending: bool
    recovery_codes_left: int
    required_by_practice: bool


@dataclass(frozen=True)
class Enrollment:
    secret: str
    otpauth_uri: str
    qr_svg: str


def _code_invalid() -> InvalidInput:
    return InvalidInput("second_factor_code_invalid", "That code is not correct. Try again.")


def get_status(uow: UnitOfWork, actor: Actor) -> SecondFactorStatus:
    me = acting_member(uow, actor).member
    stored = uow.signin.find_totp(actor.practice_id, me.id)
    confirmed = stored is not None and stored.confirmed
    return SecondFactorStatus(
        enrolled=confirmed,
        enrollment_pending=stored is not None and not stored.confirmed,
        recovery_codes_left=uow.signin.count_recovery_codes(actor.practice_id, me.id)
        if confirmed
        else 0,
        required_by_practice=uow.signin.get_security_settings(
            actor.practice_id
        ).require_second_factor,
    )


def begin_enrollment(uow: UnitOfWork, actor: Actor) -> Enrollment:
    """A new secret for the acting member, unconfirmed until a code proves the
    authenticator app has it. Refused while a confirmed second factor exists (disable
    it first, with re-authentication)."""
    me = acting_member(uow, actor).member
    stored = uow.signin.find_totp(actor.practice_id, me.id, for_update=True)
    if stored is not None and stored.confirmed:
        raise Conflict(
            "second_factor_enrolled", "A second factor is already set up. Disable it first."
        )
    secret = totp.new_secret()
    uow.signin.start_totp(actor.practice_id, me.id, secret)
    uow.audit.record(actor, "second_factor.enrollment_started", "member", me.id)
    uow.commit()
    uri = totp.provisioning_uri(secret, account=me.email, issuer=ISSUER)
    return Enrollment(secret, uri, totp.qr_svg(uri))


def pending_enrollment(uow: UnitOfWork, actor: Actor) -> Enrollment | None:
    """The acting member's started, unconfirmed enrollment, shown again (the Security
    page after a mistyped code, or a reload): the secret is theirs and not in use yet.
    None once confirmed: a confirmed secret is never shown again."""
    me = acting_member(uow, actor).member
    stored = uow.signin.find_totp(actor.practice_id, me.id)
    if stored is None or stored.confirmed:
        return None
    uri = totp.provisioning_uri(stored.secret, account=me.email, issuer=ISSUER)
    return Enrollment(stored.secret, uri, totp.qr_svg(uri))


def reset_for_member(uow: UnitOfWork, actor: Actor, member_id: int) -> None:
    """PA4 recovery for a member who lost both the authenticator and the recovery codes:
    the account owner (or a practice manager, `signin.may_reset_second_factor`) removes
    the member's second factor and ends their sessions. If the practice requires a
    second factor, the member must enroll again right after their next sign-in (the
    session lookup's rule). Audited `second_factor.reset`."""
    me = acting_member(uow, actor).member
    require(policy.may_manage_team(me))  # before the lookup (PM7)
    target = uow.people.get_member(actor.practice_id, member_id)
    require(signin.may_reset_second_factor(me, target))
    if not uow.signin.has_second_factor(actor.practice_id, target.id):
        raise Conflict("second_factor_not_enrolled", "No second factor is set up.")
    uow.signin.delete_totp(actor.practice_id, target.id)
    uow.signin.delete_recovery_codes(actor.practice_id, target.id)
    ended = uow.sessions.end_sessions_of(actor.practice_id, target.party)
    uow.audit.record(actor, "second_factor.reset", "member", target.id, sessions=ended)
    uow.outbox.add(actor.practice_id, "session.ended", party=str(target.party))
    uow.commit()


def operator_reset(uow: UnitOfWork, operator: Actor, member_id: int) -> int:
    """PA4 recovery when nobody in the practice can reset: the account owner lost both
    the authenticator and the recovery codes. The server's operator (someone who can
    run `confide` on the server, and so holds the master key already) removes the
    member's second factor from the command line; their sessions end. `operator` is a
    system actor of the member's practice whose `authenticated_entity` names the
    operating-system user. Audited `second_factor.reset`; the number of sessions ended."""
    target = uow.people.get_member(operator.practice_id, member_id)
    if not uow.signin.has_second_factor(operator.practice_id, target.id):
        raise Conflict("second_factor_not_enrolled", "No second factor is set up.")
    uow.signin.delete_totp(operator.practice_id, target.id)
    uow.signin.delete_recovery_codes(operator.practice_id, target.id)
    ended = uow.sessions.end_sessions_of(operator.practice_id, target.party)
    uow.audit.record(operator, "second_factor.reset", "member", target.id, sessions=ended)
    uow.outbox.add(operator.practice_id, "session.ended", party=str(target.party))
    uow.commit()
    return ended


def members_with_second_factor(uow: UnitOfWork, actor: Actor) -> set[MemberId]:
    """Which team members of the actor's practice have a second factor (Settings >
    Team shows it to every member, with the reset for those allowed)."""
    acting_member(uow, actor)
    return uow.signin.list_members_with_second_factor(actor.practice_id)


def confirm_enrollment(uow: UnitOfWork, actor: Actor, *, code: str) -> list[str]:
    """A code from the app confirms the enrollment; returns the 10 recovery codes
    (shown once)."""
    me = acting_member(uow, actor).member
    stored = uow.signin.find_totp(actor.practice_id, me.id, for_update=True)
    if stored is None or stored.confirmed:
        raise _code_invalid()
    step = totp.matching_step(stored.secret, code, utcnow())
    if step is None or not uow.signin.use_totp_step(actor.practice_id, me.id, step):
        uow.audit.record(actor, "second_factor.confirm_failed", "member", me.id)
        uow.commit()
        raise _code_invalid()
    uow.signin.confirm_totp(actor.practice_id, me.id)
    codes = totp.new_recovery_codes()
    uow.signin.replace_recovery_codes(
        actor.practice_id,
        me.id,
        [totp.recovery_code_hash(totp.normalise_recovery_code(c) or "") for c in codes],
    )
    uow.audit.record(actor, "second_factor.enabled", "member", me.id)
    uow.commit()
    return codes


def verify_code(
    uow: UnitOfWork, practice_id: PracticeId, member_id: MemberId, code: str
) -> str | None:
    """ "totp" or "recovery" when `code` is a fresh TOTP code or an unused recovery code
    of the member's confirmed second factor (and spends it); None otherwise. Call
    within a write transaction."""
    if len(code) > 100:
        return None
    stored = uow.signin.find_totp(practice_id, member_id, for_update=True)
    if stored is None or not stored.confirmed:
        return None
    if totp.looks_like_totp(code):
        step = totp.matching_step(stored.secret, code, utcnow())
        if step is not None and uow.signin.use_totp_step(practice_id, member_id, step):
            return "totp"
        return None
    normal = totp.normalise_recovery_code(code)
    if normal and uow.signin.use_recovery_code(
        practice_id, member_id, totp.recovery_code_hash(normal)
    ):
        return "recovery"
    return None


def _reauthenticate(
    uow: UnitOfWork,
    actor: Actor,
    passwords: Passwords,
    policy: SessionPolicy,
    *,
    password: str,
    code: str,
) -> MemberId:
    """The password and a code again, for changes to the second factor itself. Failures
    count towards the account's lockout."""
    me = acting_member(uow, actor).member
    refuse_if_locked(uow, policy, email=me.email, ip=actor.ip, practice=actor.practice_id)
    stored_hash = uow.people.find_login(me.email)
    ok = len(password) <= MAX_PASSWORD_CHARS and passwords.verify(
        stored_hash[1] if stored_hash else None, password
    )
    kind = verify_code(uow, actor.practice_id, me.id, code) if ok else None
    if kind is None:
        uow.audit.record(actor, "second_factor.reauthentication_failed", "member", me.id)
        record_failure(
            uow, policy, email=me.email, ip=actor.ip, practice=actor.practice_id, member_id=me.id
        )
        uow.commit()
        raise Forbidden("reauthentication_failed", "The password or the code is not correct.")
    return me.id


def disable(
    uow: UnitOfWork,
    actor: Actor,
    passwords: Passwords,
    policy: SessionPolicy,
    *,
    password: str,
    code: str,
) -> None:
    """Remove the second factor (password and a code again). Refused while the practice
    requires a second factor."""
    me = acting_member(uow, actor).member
    if not uow.signin.has_second_factor(actor.practice_id, me.id):
        raise Conflict("second_factor_not_enrolled", "No second factor is set up.")
    if uow.signin.get_security_settings(actor.practice_id).require_second_factor:
        raise Forbidden(
            signin.SECOND_FACTOR_REQUIRED_BY_PRACTICE,
            "Your practice requires a second factor for every team member.",
        )
    member_id = _reauthenticate(uow, actor, passwords, policy, password=password, code=code)
    uow.signin.delete_totp(actor.practice_id, member_id)
    uow.signin.delete_recovery_codes(actor.practice_id, member_id)
    uow.audit.record(actor, "second_factor.disabled", "member", member_id)
    uow.commit()


def regenerate_recovery_codes(
    uow: UnitOfWork,
    actor: Actor,
    passwords: Passwords,
    policy: SessionPolicy,
    *,
    password: str,
    code: str,
) -> list[str]:
    """10 new recovery codes; the old ones stop working."""
    me = acting_member(uow, actor).member
    if not uow.signin.has_second_factor(actor.practice_id, me.id):
        raise Conflict("second_factor_not_enrolled", "No second factor is set up.")
    member_id = _reauthenticate(uow, actor, passwords, policy, password=password, code=code)
    codes = totp.new_recovery_codes()
    uow.signin.replace_recovery_codes(
        actor.practice_id,
        member_id,
        [totp.recovery_code_hash(totp.normalise_recovery_code(c) or "") for c in codes],
    )
    uow.audit.record(actor, "second_factor.recovery_codes_replaced", "member", member_id)
    uow.commit()
    return codes


def complete_sign_in(
    uow: UnitOfWork,
    policy: SessionPolicy,
    *,
    challenge_token: str,
    code: str,
    ip: str | None,
) -> tuple[str, Actor]:
    """The second step: the pending step's token and a code → a NEW session id (the
    pending token never becomes one). 5 minutes and 5 codes per pending step; failed
    codes count towards the account's lockout."""
    digest = token_hash(challenge_token)
    challenge = uow.signin.find_challenge(digest)
    now = utcnow()
    if (
        challenge is None
        or challenge.used
        or challenge.expires_at <= now
        or challenge.attempts >= signin.CHALLENGE_MAX_ATTEMPTS
    ):
        raise NotAuthenticated()
    member = uow.people.get_member(challenge.practice_id, challenge.member_id)
    if not member.active:
        raise NotAuthenticated()
    first = Via(challenge.via)
    who = Actor(member.practice_id, member.party, first, ip)
    refuse_if_locked(uow, policy, email=member.email, ip=ip, practice=member.practice_id)
    kind = verify_code(uow, member.practice_id, member.id, code)
    if kind is None:
        uow.signin.count_challenge_attempt(digest)
        uow.audit.record(who, "signin.second_factor_failed", "member", member.id)
        record_failure(
            uow, policy, email=member.email, ip=ip, practice=member.practice_id, member_id=member.id
        )
        uow.commit()
        raise _code_invalid()
    if not uow.signin.use_challenge(digest):
        raise NotAuthenticated()
    uow.signin.clear_failures(account_key(member.email))
    via = Via.OIDC_TOTP if first is Via.OIDC else Via.PASSWORD_TOTP
    session_id, actor = new_member_session(uow, member, via, ip, second_factor=kind)
    if kind == "recovery":
        left = uow.signin.count_recovery_codes(member.practice_id, member.id)
        uow.audit.record(actor, "second_factor.recovery_code_used", "member", member.id, left=left)
    uow.commit()
    return session_id, actor
