"""Signing in and out, sessions and API tokens: the authentication seam.

Today: team members sign in with email + password and get a server-side session, or
use a personal API token. The sign-in issue extends this module (TOTP, portal links,
OIDC) without changing the routes that call `resolve_session`.
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from confide.auth.passwords import MAX_PASSWORD_CHARS, Passwords
from confide.auth.tokens import new_token, token_hash
from confide.domain.actors import Actor, Party, Via
from confide.domain.errors import InvalidInput, NotAuthenticated
from confide.domain.ids import PracticeId
from confide.domain.text import prepare_email, prepare_name
from confide.services.access import acting_member
from confide.store.clock import utcnow
from confide.store.repos.sessions import StoredSession
from confide.store.uow import UnitOfWork

API_TOKEN_PREFIX = "cfd_"  # noqa: S105 - a public prefix, not a secret
_TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=15)
    absolute: timedelta = timedelta(hours=12)


def sign_in_with_password(
    uow: UnitOfWork, passwords: Passwords, *, email: str, password: str, ip: str | None
) -> tuple[str, Actor]:
    """Returns (session id, actor). The same error for an unknown email, a wrong
    password and a disabled account; every attempt is audited."""
    failed = InvalidInput("sign_in_failed", "The email or password is not correct.")
    try:
        email = prepare_email(email)
    except InvalidInput:
        raise failed from None
    if len(password) > MAX_PASSWORD_CHARS:
        raise failed
    found = uow.people.find_login(email)
    ok = passwords.verify(found[1] if found else None, password)
    if found is None or not ok or not found[0].active:
        if found is not None:
            who = Actor(found[0].practice_id, found[0].party, Via.PASSWORD, ip)
            uow.audit.record(who, "signin.failed", "member", found[0].id)
        else:
            uow.audit.record(
                Actor.system(PracticeId(0), Via.PASSWORD), "signin.failed", "member", None, ip=ip
            )
        uow.commit()
        raise failed
    member = found[0]
    actor = Actor(member.practice_id, member.party, Via.PASSWORD, ip)
    session_id = new_token()
    uow.sessions.insert_session(
        member.practice_id, member.party, Via.PASSWORD, token_hash(session_id)
    )
    uow.audit.record(actor, "session.started", "member", member.id)
    uow.commit()
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
    if now - stored.last_seen_at > policy.idle or now - stored.created_at > policy.absolute:
        return SessionCheck(actor, expired=True)
    return SessionCheck(actor, stale=now - stored.last_seen_at > _TOUCH_EVERY)


def refresh_session(uow: UnitOfWork, session_id: str, check: SessionCheck) -> None:
    """The write half of `check_session`: end an expired session or move the idle timer."""
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
    uow.commit()


def sign_out(uow: UnitOfWork, actor: Actor, session_id: str) -> None:
    if uow.sessions.end_session(token_hash(session_id)):
        uow.audit.record(actor, "session.ended", actor.party.kind.value, actor.party.id)
        uow.outbox.add(actor.practice_id, "session.ended", party=str(actor.party))
    uow.commit()


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


def resolve_api_token(uow: UnitOfWork, token: str, *, ip: str | None) -> Actor:
    found = uow.sessions.find_api_token(token_hash(token))
    if found is None:
        raise NotAuthenticated()
    practice_id, member_id = found
    return Actor(practice_id, Party.member(member_id), Via.API_TOKEN, ip)


def revoke_api_token(uow: UnitOfWork, actor: Actor, token_id: int) -> bool:
    me = acting_member(uow, actor)
    done = uow.sessions.revoke_api_token(actor.practice_id, me.member.id, token_id)
    if done:
        uow.audit.record(actor, "api_token.revoked", "api_token", token_id)
    uow.commit()
    return done
