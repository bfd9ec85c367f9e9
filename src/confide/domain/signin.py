"""Sign-in rules, pure: the practice's security settings, who may change them, the
lockout rule and the limits of the second factor (PA4, PA5; issue 5).

No I/O and no clock: times are passed in.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from confide.domain.entities import Member, Role
from confide.domain.errors import DomainError
from confide.domain.policy import ALLOW, INACTIVE, NOT_PERMITTED, Decision, deny

IDLE_MINUTES_MIN = 5
IDLE_MINUTES_MAX = 60
IDLE_MINUTES_DEFAULT = 15
RECOVERY_CODE_COUNT = 10
# The pending step between password and code: short-lived, a few tries.
CHALLENGE_TTL = timedelta(minutes=5)
CHALLENGE_MAX_ATTEMPTS = 5
# A started OIDC sign-in must come back within this time.
OIDC_REQUEST_TTL = timedelta(minutes=10)

SECOND_FACTOR_REQUIRED_BY_PRACTICE = "second_factor_required_by_practice"


class TooManyAttempts(DomainError):
    """A lockout or rate limit: the same answer whatever the account (non-enumerating)."""

    status = 429

    def __init__(self) -> None:
        super().__init__(
            "sign_in_locked",
            "Too many sign-in attempts. Wait a few minutes, then try again.",
        )


class SecondFactorRequired(DomainError):
    """The password was right and the account has a second factor: the sign-in goes on
    with a code. Carries the pending step's token (set as its own short-lived cookie;
    it grants nothing but the second step)."""

    status = 401

    def __init__(self, challenge_token: str) -> None:
        super().__init__("second_factor_required", "Enter the code from your authenticator app.")
        self.challenge_token = challenge_token


@dataclass(frozen=True)
class SecuritySettings:
    """A practice's sign-in settings (defaults when the practice never set them)."""

    require_second_factor: bool = False
    session_idle_minutes: int = IDLE_MINUTES_DEFAULT
    members_may_use_oidc: bool = False


def may_change_security_settings(member: Member) -> Decision:
    """PA4: the account owner decides on the second factor for the whole practice (and
    on OIDC sign-in for team members)."""
    if not member.active:
        return deny(INACTIVE)
    return ALLOW if member.has(Role.ACCOUNT_OWNER) else deny(NOT_PERMITTED)


def may_end_member_sessions(member: Member) -> Decision:
    """PA5: the account owner can end any member's sessions (their own included)."""
    if not member.active:
        return deny(INACTIVE)
    return ALLOW if member.has(Role.ACCOUNT_OWNER) else deny(NOT_PERMITTED)


def may_reset_second_factor(actor: Member, target: Member) -> Decision:
    """PA4, for a member who lost both the authenticator and the recovery codes: the
    account owner resets anyone's second factor; practice managers (who add, change and
    remove team members) anyone's but the account owner's. Never one's own here: that
    goes through one's own Security page, with the password and a code."""
    if not actor.active or actor.practice_id != target.practice_id or actor.id == target.id:
        return deny(NOT_PERMITTED)
    if actor.has(Role.ACCOUNT_OWNER):
        return ALLOW
    if actor.has(Role.PRACTICE_MANAGER) and not target.has(Role.ACCOUNT_OWNER):
        return ALLOW
    return deny(NOT_PERMITTED)


def locked_out(failures: list[datetime], *, limit: int, window: timedelta, now: datetime) -> bool:
    """Locked while `limit` failures fall within the `window` before `now`: a lockout
    lasts until the oldest of them leaves the window (at most `window` after the last
    failure), so an attacker who keeps trying keeps the lock on."""
    recent = [t for t in failures if now - t < window]
    return len(recent) >= limit


def must_enroll(settings: SecuritySettings, *, enrolled: bool) -> bool:
    """PA4: with the practice's requirement on, a member without a second factor may
    do nothing but enroll (and see who they are, and sign out)."""
    return settings.require_second_factor and not enrolled
