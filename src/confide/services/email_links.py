"""The email-link sign-ins: the portal link of a notification (PA1, PA6), instant
sign-in (PA2) and team members' password reset.

Requests (`request_*`) do the same work whatever the address: a rate-limit count, one
row and one job, so known and unknown addresses get byte-identical answers in similar
time (the lookup and the email happen in the job). Redemptions (`redeem_*`) are called
from the landing pages' POST only.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from confide.auth.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Passwords
from confide.auth.tokens import new_token, token_hash
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.errors import DomainError, InvalidInput, NotAuthenticated, NotFound
from confide.domain.ids import MemberId, PracticeId
from confide.domain.notices import (
    InstantSignIn,
    Invitation,
    LinkUrl,
    PasswordReset,
    PracticeLabel,
)
from confide.domain.text import prepare_email
from confide.services.access import access_conversation, acting_client_side
from confide.services.links import LinkRefused, Purpose, issue_link, redeem_link
from confide.store.clock import utcnow
from confide.store.uow import UnitOfWork

INSTANT_SIGN_IN_JOB = "signin.instant_link"
PASSWORD_RESET_JOB = "signin.password_reset"  # noqa: S105 - a job kind
INSTANT_SIGN_IN_PATH = "/l/s/"
PASSWORD_RESET_PATH = "/l/r/"  # noqa: S105 - a path
PORTAL_LINK_PATH = "/l/m/"
INVITATION_PATH = "/l/i/"
INVITATION_TTL = timedelta(days=7)

# SECURITY-TESTS T11: per IP 20 requests per 15 minutes; per person 5 links per hour.
IP_LIMIT = 20
IP_WINDOW = timedelta(minutes=15)
LINKS_PER_PERSON = 5
PERSON_WINDOW = timedelta(hours=1)
MAX_MATCHES = 5  # one address may belong to a client of several practices


class RateLimited(DomainError):
    status = 429

    def __init__(self) -> None:
        super().__init__("rate_limited", "Too many requests. Wait a few minutes and try again.")


def _sealed_email_aad(kind: str) -> bytes:
    return f"confide:job:{kind}".encode()


def _request(
    uow: UnitOfWork, kind: str, purpose: Purpose, *, email: str, ip: str | None, ip_limit: int
) -> None:
    try:
        address = prepare_email(email)
    except InvalidInput:
        address = None  # answered like any other address: nothing is sent
    keys = uow.db.keys
    ip_hash = keys.lookup_hash("ip", ip or "-")
    if uow.links.count_requests_since(since=utcnow() - IP_WINDOW, ip_hash=ip_hash) >= ip_limit:
        raise RateLimited()
    uow.links.insert_request(
        purpose.value, email_hash=keys.lookup_hash("email", address or "-"), ip_hash=ip_hash
    )
    if address is not None:
        uow.jobs.enqueue(0, kind, {"email": keys.seal(address, _sealed_email_aad(kind))})
    uow.commit()


def request_instant_sign_in(
    uow: UnitOfWork, *, email: str, ip: str | None, ip_limit: int = IP_LIMIT
) -> None:
    """PA2: queue the link; the same answer for every address."""
    _request(
        uow, INSTANT_SIGN_IN_JOB, Purpose.INSTANT_SIGN_IN, email=email, ip=ip, ip_limit=ip_limit
    )


def request_password_reset(
    uow: UnitOfWork, *, email: str, ip: str | None, ip_limit: int = IP_LIMIT
) -> None:
    _request(uow, PASSWORD_RESET_JOB, Purpose.PASSWORD_RESET, email=email, ip=ip, ip_limit=ip_limit)


def unseal_job_email(uow: UnitOfWork, kind: str, sealed: str) -> str:
    return uow.db.keys.unseal(sealed, _sealed_email_aad(kind))


@dataclass(frozen=True)
class LinkEmail:
    practice_id: PracticeId
    party: Party
    to: str
    notice: InstantSignIn | PasswordReset | Invitation
    link_id: int


def prepare_instant_sign_in(
    uow: UnitOfWork, *, email: str, origin: str, ttl: timedelta, now: datetime | None = None
) -> list[LinkEmail]:
    """The job's half of PA2: a link for each client or contact with this address and
    portal access (only the newest works), unless they had 5 in the last hour.
    Commits."""
    now = now or utcnow()
    out = []
    for found in uow.people.find_client_side_by_email(email, limit=MAX_MATCHES):
        practice_id, party = found.practice_id, found.party
        uow.links.lock_party(practice_id, party)
        if (
            uow.links.count_links_since(
                practice_id, party, Purpose.INSTANT_SIGN_IN.value, now - PERSON_WINDOW
            )
            >= LINKS_PER_PERSON
        ):
            continue
        link = issue_link(
            uow, practice_id, Purpose.INSTANT_SIGN_IN, party, ttl=ttl, newest_only=True, now=now
        )
        practice = uow.practices.get_practice(practice_id)
        label = PracticeLabel.if_allowed(
            practice.name, name_practice=uow.notifications.get_name_practice(practice_id)
        )
        notice = InstantSignIn(
            link=LinkUrl(origin, INSTANT_SIGN_IN_PATH, link.token),
            valid_minutes=max(1, int(ttl.total_seconds() // 60)),
            practice=label,
        )
        out.append(LinkEmail(practice_id, party, email, notice, link.link_id))
    uow.commit()
    return out


def prepare_password_reset(
    uow: UnitOfWork, *, email: str, origin: str, ttl: timedelta, now: datetime | None = None
) -> list[LinkEmail]:
    now = now or utcnow()
    found = uow.people.find_login(email)
    if found is None or not found[0].active:
        return []
    member = found[0]
    uow.links.lock_party(member.practice_id, member.party)
    if (
        uow.links.count_links_since(
            member.practice_id, member.party, Purpose.PASSWORD_RESET.value, now - PERSON_WINDOW
        )
        >= LINKS_PER_PERSON
    ):
        return []
    link = issue_link(
        uow,
        member.practice_id,
        Purpose.PASSWORD_RESET,
        member.party,
        ttl=ttl,
        newest_only=True,
        now=now,
    )
    notice = PasswordReset(
        link=LinkUrl(origin, PASSWORD_RESET_PATH, link.token),
        valid_minutes=max(1, int(ttl.total_seconds() // 60)),
    )
    uow.commit()
    return [LinkEmail(member.practice_id, member.party, member.email, notice, link.link_id)]


def prepare_invitation(
    uow: UnitOfWork, practice_id: PracticeId, member_id: int, *, origin: str
) -> list[LinkEmail]:
    """The job's half of an invitation: a 7-day link to choose a password, if the member
    is still active and has none. Commits."""
    member = uow.people.get_member(practice_id, member_id)
    found = uow.people.find_login(member.email)
    if not member.active or found is None or found[1] is not None:
        return []
    uow.links.lock_party(practice_id, member.party)
    link = issue_link(
        uow, practice_id, Purpose.INVITATION, member.party, ttl=INVITATION_TTL, newest_only=True
    )
    practice = uow.practices.get_practice(practice_id)
    notice = Invitation(
        link=LinkUrl(origin, INVITATION_PATH, link.token),
        valid_days=INVITATION_TTL.days,
        practice=PracticeLabel(practice.name),
    )
    uow.commit()
    return [LinkEmail(practice_id, member.party, member.email, notice, link.link_id)]


def record_link_email_sent(uow: UnitOfWork, sent: LinkEmail) -> None:
    uow.audit.record(
        Actor.system(sent.practice_id),
        "email.sent",
        sent.party.kind.value,
        sent.party.id,
        link_id=sent.link_id,
        template=sent.notice.template,
    )
    uow.commit()


# --- redeeming: the landing pages' POST ---------------------------------------------


def _new_session(uow: UnitOfWork, actor: Actor) -> str:
    session_id = new_token()
    uow.sessions.insert_session(actor.practice_id, actor.party, actor.via, token_hash(session_id))
    uow.audit.record(actor, "session.started", actor.party.kind.value, actor.party.id)
    return session_id


@dataclass(frozen=True)
class LinkSession:
    session_id: str
    actor: Actor


def redeem_portal_link(uow: UnitOfWork, token: str, *, ip: str | None) -> LinkSession:
    """PA1, PA6: a session limited to the link's conversation and lifetime. Refused
    like an expired link when the client may no longer read it (EN6)."""
    link = redeem_link(uow, token, Purpose.PORTAL, ip=ip)
    if link.conversation_id is None:
        raise LinkRefused()
    actor = Actor(
        link.practice_id, link.party, Via.PORTAL_LINK, ip, conversation_scope=link.conversation_id
    )
    try:
        access_conversation(uow, actor, link.conversation_id)
    except (NotFound, NotAuthenticated, DomainError):
        raise LinkRefused() from None
    session_id = _new_session(uow, actor)
    uow.links.insert_link_session(
        link.practice_id,
        session_hash=token_hash(session_id),
        link_id=link.id,
        conversation_id=link.conversation_id,
        expires_at=link.expires_at,
    )
    uow.commit()
    return LinkSession(session_id, actor)


def redeem_instant_sign_in(uow: UnitOfWork, token: str, *, ip: str | None) -> LinkSession:
    """PA2: a full portal session for the client or contact."""
    link = redeem_link(uow, token, Purpose.INSTANT_SIGN_IN, ip=ip)
    actor = Actor(link.practice_id, link.party, Via.MAGIC_LINK, ip)
    try:
        acting_client_side(uow, actor)
    except (NotFound, NotAuthenticated):
        raise LinkRefused() from None
    session_id = _new_session(uow, actor)
    uow.commit()
    return LinkSession(session_id, actor)


def redeem_password_reset(
    uow: UnitOfWork,
    passwords: Passwords,
    token: str,
    *,
    password: str,
    ip: str | None,
    purpose: Purpose = Purpose.PASSWORD_RESET,
) -> Actor:
    """Set a new password and end every session of the member (the old password may be
    known to someone else). The password is checked before the link is used. An
    invitation's link (`purpose=Purpose.INVITATION`) sets the first password."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidInput(
            "weak_password",
            f"Choose a password of at least {MIN_PASSWORD_CHARS} characters.",
        )
    link = redeem_link(uow, token, purpose, ip=ip)
    if link.party.kind is not PartyKind.MEMBER:
        raise LinkRefused()
    member = uow.people.get_member(link.practice_id, link.party.id)
    if not member.active:
        raise LinkRefused()
    actor = Actor(link.practice_id, link.party, Via.MAGIC_LINK, ip)
    uow.people.update_member(
        link.practice_id, MemberId(member.id), password_hash=passwords.hash(password)
    )
    ended = uow.sessions.end_sessions_of(link.practice_id, link.party)
    action = (
        "member.invitation_accepted" if purpose is Purpose.INVITATION else "member.password_reset"
    )
    uow.audit.record(actor, action, "member", member.id, sessions_ended=ended)
    if ended:
        uow.outbox.add(link.practice_id, "session.ended", party=str(link.party))
    uow.commit()
    return actor


def link_session_scope(uow: UnitOfWork, session_id: str, *, now: datetime | None = None) -> int:
    """The conversation a portal-link session reaches; NotAuthenticated once the link's
    24 hours are over or the link was revoked."""
    scope = uow.links.find_link_session(token_hash(session_id))
    if scope is None or (now or utcnow()) >= scope.expires_at:
        raise NotAuthenticated()
    return scope.conversation_id
