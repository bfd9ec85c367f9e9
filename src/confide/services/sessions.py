"""Signing in and out, sessions and API tokens: the authentication seam.

Team members sign in with email + password (then a TOTP code when they have a second
factor: services/second_factor.py) and get a server-side session, or use a personal
API token. Failed attempts are counted in the database per account and per client
address (rate limits and lockout shared by every process). Sessions end after the
practice's idle limit and 12 hours (PA5), on sign-out, sign-out everywhere, and when
the account owner ends a member's sessions.
"""

import hashlib
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from confide.auth.passwords import MAX_PASSWORD_CHARS, Passwords
from confide.auth.tokens import new_token, token_hash
from confide.domain import signin
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.entities import Member
from confide.domain.errors import InvalidInput, NotAuthenticated
from confide.domain.ids import MemberId, PracticeId
from confide.domain.text import prepare_email, prepare_name
from confide.services.access import acting_member, require
from confide.store.clock import utcnow
from confide.store.repos.sessions import StoredSession
from confide.store.uow import UnitOfWork

API_TOKEN_PREFIX = "cfd_"  # noqa: S105 - a public prefix, not a secret
_TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class SessionPolicy:
    # The default idle limit; a practice's own setting (5-60 minutes) overrides it.
    idle: timedelta = timedelta(minutes=15)
    absolute: timedelta = timedelta(hours=12)
    # Rate limits and lockout of sign-in attempts (docs/security.md).
    max_failures_account: int = 5
    max_failures_ip: int = 30
    failure_window: timedelta = timedelta(minutes=15)


def account_key(email: str) -> str:
    """The lockout key of an email address, known or not (so a lockout tells nothing)."""
    return "account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def ip_key(ip: str | None) -> str:
    return f"ip:{ip or '-'}"


def _locked(uow: UnitOfWork, policy: SessionPolicy, keys: dict[str, int]) -> bool:
    now = utcnow()
    since = now - policy.failure_window
    return any(
        signin.locked_out(
            uow.signin.list_failures(key, since), limit=limit, window=policy.failure_window, now=now
        )
        for key, limit in keys.items()
    )


def _limits(policy: SessionPolicy, email: str, ip: str | None) -> dict[str, int]:
    return {
        account_key(email): policy.max_failures_account,
        ip_key(ip): policy.max_failures_ip,
    }


def refuse_if_locked(
    uow: UnitOfWork, policy: SessionPolicy, *, email: str, ip: str | None, practice: PracticeId
) -> None:
    """Refuse (429 `sign_in_locked`) while the account or the client address is locked;
    audited. Before any password is checked: a right password does not get through a
    lockout either, so the lock tells an attacker nothing."""
    if _locked(uow, policy, _limits(policy, email, ip)):
        uow.audit.record(
            Actor.system(practice, Via.PASSWORD), "signin.refused_locked", "member", None, ip=ip
        )
        uow.commit()
        raise signin.TooManyAttempts()


def record_failure(
    uow: UnitOfWork,
    policy: SessionPolicy,
    *,
    email: str,
    ip: str | None,
    practice: PracticeId,
    member_id: MemberId | None,
) -> None:
    """Count a failed attempt for the account and the address; audit a lockout when
    this failure starts one. The caller audits the failure itself and commits."""
    now = utcnow()
    limits = _limits(policy, email, ip)
    for key in limits:
        uow.signin.record_failure(key, now)
    if secrets.randbelow(100) == 0:  # housekeeping: counters older than a day count no more
        uow.signin.prune_failures(now - max(policy.failure_window, timedelta(days=1)))
    if _locked(uow, policy, limits):
        uow.audit.record(
            Actor.system(practice, Via.PASSWORD), "signin.locked", "member", member_id, ip=ip
        )


def sign_in_with_password(
    uow: UnitOfWork,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    ip: str | None,
    policy: SessionPolicy | None = None,
) -> tuple[str, Actor]:
    """Returns (session id, actor). The same error for an unknown email, a wrong
    password and a disabled account; every attempt is audited. Too many failures for
    the email or the address: `TooManyAttempts` (429) for a while, whatever the password.

    A member with a second factor gets `SecondFactorRequired` instead, carrying the
    token of the pending step (services/second_factor.complete_sign_in goes on)."""
    policy = policy or SessionPolicy()
    failed = InvalidInput("sign_in_failed", "The email or password is not correct.")
    try:
        email = prepare_email(email)
    except InvalidInput:
        raise failed from None
    if len(password) > MAX_PASSWORD_CHARS:
        raise failed
    found = uow.people.find_login(email)
    practice = found[0].practice_id if found else PracticeId(0)
    refuse_if_locked(uow, policy, email=email, ip=ip, practice=practice)
    ok = passwords.verify(found[1] if found else None, password)
    if found is None or not ok or not found[0].active:
        if found is not None:
            who = Actor(found[0].practice_id, found[0].party, Via.PASSWORD, ip)
            uow.audit.record(who, "signin.failed", "member", found[0].id)
        else:
            uow.audit.record(
                Actor.system(PracticeId(0), Via.PASSWORD), "signin.failed", "member", None, ip=ip
            )
        record_failure(
            uow,
            policy,
            email=email,
            ip=ip,
            practice=practice,
            member_id=found[0].id if found else None,
        )
        uow.commit()
        raise failed
    member = found[0]
    if uow.signin.has_second_factor(member.practice_id, member.id):
        # The failures count on until the code is right too: with the password alone,
        # an attacker gets no fresh tries at the code.
        challenge = start_second_step(uow, member, Via.PASSWORD, ip)
        uow.commit()
        raise signin.SecondFactorRequired(challenge)
    uow.signin.clear_failures(account_key(email))
    session_id, actor = new_member_session(uow, member, Via.PASSWORD, ip)
    uow.commit()
    return session_id, actor


def start_second_step(uow: UnitOfWork, member: Member, first: Via, ip: str | None) -> str:
    """The pending step of a two-step sign-in: a 256-bit token, stored hashed, for 5
    minutes and 5 codes. It is not a session: it grants nothing but the second step."""
    challenge = new_token()
    uow.signin.insert_challenge(
        member.practice_id,
        member.id,
        token_hash(challenge),
        via=first.value,
        expires_at=utcnow() + signin.CHALLENGE_TTL,
    )
    actor = Actor(member.practice_id, member.party, first, ip)
    uow.audit.record(actor, "signin.second_factor_requested", "member", member.id)
    return challenge


def new_member_session(
    uow: UnitOfWork, member: Member, via: Via, ip: str | None, **meta: object
) -> tuple[str, Actor]:
    actor = Actor(member.practice_id, member.party, via, ip)
    session_id = new_token()
    uow.sessions.insert_session(member.practice_id, member.party, via, token_hash(session_id))
    uow.audit.record(actor, "session.started", "member", member.id, **meta)
    return session_id, actor


def start_session(uow: UnitOfWork, actor: Actor) -> str:
    """A session for an actor proven by another means (the portal sign-in issue's links,
    OIDC); also used by tests to sign clients in."""
    session_id = new_token()
    uow.sessions.insert_session(actor.practice_id, actor.party, actor.via, token_hash(session_id))
    uow.audit.record(actor, "session.started", actor.party.kind.value, actor.party.id)
    uow.commit()
    return session_id


@dataclass(frozen=True)
class SessionCheck:
    actor: Actor | None
    expired: bool = False  # over a limit: end it (in a write transaction)
    stale: bool = False  # live, but last_seen_at should move forward
    # PA4: live, but the member must enroll a second factor before anything else.
    must_enroll: bool = False
    # When a live session would pass its idle or absolute limit if nothing moved its
    # idle timer (the hub checks an open socket's session again then, not every tick).
    due: datetime | None = None


def check_session(
    uow: UnitOfWork,
    session_id: str,
    policy: SessionPolicy,
    *,
    ip: str | None,
    now: datetime | None = None,
) -> SessionCheck:
    """Read-only: the actor of a live session; idle and absolute limits (PA5) are
    enforced here, on the server, at every request."""
    stored = uow.sessions.find_live_session(token_hash(session_id))
    return session_verdict(stored, policy, ip=ip, now=now or utcnow())


def check_sessions(
    uow: UnitOfWork,
    session_ids: Collection[str],
    policy: SessionPolicy,
    *,
    ip: str | None = None,
    now: datetime | None = None,
) -> dict[str, SessionCheck]:
    """`check_session` for many sessions at once (the hub's periodic check of all its
    sockets): one query per 500 sessions, the same rules. Read-only, too."""
    now = now or utcnow()
    digests = {sid: token_hash(sid) for sid in session_ids}
    stored = uow.sessions.find_live_sessions(digests.values())
    return {
        sid: session_verdict(stored.get(digest), policy, ip=ip, now=now)
        for sid, digest in digests.items()
    }


def session_verdict(
    stored: StoredSession | None, policy: SessionPolicy, *, ip: str | None, now: datetime
) -> SessionCheck:
    """The session rules (PA5), pure: unknown or ended → no actor; over the idle or the
    absolute limit → expired; live but not seen for a while → stale."""
    if stored is None:
        return SessionCheck(None)
    actor = Actor(stored.practice_id, stored.party, stored.via, ip)
    idle = policy.idle if stored.idle_minutes is None else timedelta(minutes=stored.idle_minutes)
    if now - stored.last_seen_at > idle or now - stored.created_at > policy.absolute:
        return SessionCheck(actor, expired=True)
    return SessionCheck(
        actor,
        stale=now - stored.last_seen_at > _TOUCH_EVERY,
        must_enroll=stored.must_enroll,
        due=min(stored.last_seen_at + idle, stored.created_at + policy.absolute),
    )


def refresh_session(
    uow: UnitOfWork, session_id: str, check: SessionCheck, *, commit: bool = True
) -> None:
    """The write half of `check_session`: end an expired session or move the idle timer.
    `commit=False` leaves moving the idle timer to the caller's commit (the send path:
    it moves with the message sent); an expired session is ended and committed always."""
    digest = token_hash(session_id)
    actor = check.actor
    if actor is None:
        return
    if check.expired:
        if uow.sessions.end_session(digest):
            uow.audit.record(actor, "session.expired", actor.party.kind.value, actor.party.id)
            uow.outbox.add(actor.practice_id, "session.ended", party=str(actor.party))
    elif check.stale:
        uow.sessions.touch_session(digest, utcnow())
        if not commit:
            return
    uow.commit()


def sign_out(uow: UnitOfWork, actor: Actor, session_id: str) -> None:
    if uow.sessions.end_session(token_hash(session_id)):
        uow.audit.record(actor, "session.ended", actor.party.kind.value, actor.party.id)
        uow.outbox.add(actor.practice_id, "session.ended", party=str(actor.party))
    uow.commit()


def sign_out_everywhere(uow: UnitOfWork, actor: Actor) -> int:
    """PA5: end every session of the actor (this one included), on every device; their
    sockets close within a second (the `session.ended` event). A team member's personal
    API tokens are revoked too: "everywhere" is what someone who fears a stolen laptop
    or a leaked script means, and a token left alive would keep the account open
    (docs/security.md). Returns how many sessions ended."""
    if actor.party.kind is PartyKind.SYSTEM:
        raise NotAuthenticated()
    ended = uow.sessions.end_sessions_of(actor.practice_id, actor.party)
    revoked = 0
    if actor.party.kind is PartyKind.MEMBER:
        revoked = uow.sessions.revoke_api_tokens_of(actor.practice_id, MemberId(actor.party.id))
    uow.audit.record(
        actor,
        "session.ended_everywhere",
        actor.party.kind.value,
        actor.party.id,
        sessions=ended,
        api_tokens=revoked,
    )
    uow.outbox.add(actor.practice_id, "session.ended", party=str(actor.party))
    uow.commit()
    return ended


def end_member_sessions(uow: UnitOfWork, actor: Actor, member_id: int) -> int:
    """PA5: the account owner ends a team member's sessions (their sockets close too)."""
    me = acting_member(uow, actor)
    require(signin.may_end_member_sessions(me.member))  # before the lookup (PM7)
    target = uow.people.get_member(actor.practice_id, member_id)
    ended = uow.sessions.end_sessions_of(actor.practice_id, target.party)
    uow.audit.record(actor, "session.ended_by_owner", "member", target.id, sessions=ended)
    uow.outbox.add(actor.practice_id, "session.ended", party=str(target.party))
    uow.commit()
    return ended


def create_api_token(uow: UnitOfWork, actor: Actor, *, name: str) -> tuple[int, str]:
    """A personal API token for the acting member; shown once, stored hashed."""
    me = acting_member(uow, actor)
    label = prepare_name(name, "token name") if name.strip() else "API token"
    if len(label) > 100:
        raise InvalidInput("name_too_long", "The token name can hold at most 100 characters.")
    token = new_token(API_TOKEN_PREFIX)
    token_id = uow.sessions.insert_api_token(
        actor.practice_id, me.member.id, label, token_hash(token)
    )
    uow.audit.record(actor, "api_token.created", "api_token", token_id)
    uow.commit()
    return token_id, token


def must_enroll(uow: UnitOfWork, actor: Actor) -> bool:
    """PA4: a member of a practice that requires a second factor, without one yet."""
    if actor.party.kind is not PartyKind.MEMBER:
        return False
    return uow.signin.must_enroll(actor.practice_id, MemberId(actor.party.id))


@dataclass(frozen=True)
class TokenCheck:
    actor: Actor
    must_enroll: bool  # PA4: a second factor must be enrolled before anything else


def resolve_api_token(uow: UnitOfWork, token: str, *, ip: str | None) -> TokenCheck:
    """The actor of a live API token. Its holder's row comes with it (one query) and
    stays in the unit of work for `ensure_active` and the policy's checks."""
    found = uow.sessions.find_api_token(token_hash(token))
    if found is None:
        raise NotAuthenticated()
    member = found.member
    uow.people.remember_member(member)
    actor = Actor(member.practice_id, Party.member(member.id), Via.API_TOKEN, ip)
    return TokenCheck(actor, found.must_enroll)


def revoke_api_token(uow: UnitOfWork, actor: Actor, token_id: int) -> bool:
    me = acting_member(uow, actor)
    done = uow.sessions.revoke_api_token(actor.practice_id, me.member.id, token_id)
    if done:
        uow.audit.record(actor, "api_token.revoked", "api_token", token_id)
    uow.commit()
    return done
