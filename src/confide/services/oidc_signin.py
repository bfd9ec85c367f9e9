"""Sign-in with an OpenID Connect provider (PA3), after auth/oidc.py validated the id
token. Accounts are linked by (issuer, subject):

- a linked account signs its person in (a client, a contact, or a team member of a
  practice that allows it; a member with a second factor goes on to the code step);
- the first sign-in of an unlinked account links it by its VERIFIED email, to a client
  or contact with portal access only, and only when exactly one matches;
- a team member links their account while signed in (`begin(link=actor)`), only where
  the practice allows team members to use OIDC.

Every refusal is audited with a reason code (never the email) and answered with one
generic error, so the browser learns nothing about why or whom.
"""

from confide.auth.oidc import Claims
from confide.auth.tokens import new_token, token_hash
from confide.domain import signin
from confide.domain.actors import Actor, PartyKind, Via
from confide.domain.errors import Forbidden, NotFound
from confide.domain.ids import PracticeId
from confide.services.access import acting_member
from confide.services.sessions import start_second_step
from confide.store.clock import utcnow
from confide.store.repos.oidc import Linked
from confide.store.uow import UnitOfWork


class OidcRefused(Forbidden):
    def __init__(self, reason: str) -> None:
        super().__init__(
            "oidc_sign_in_failed", "That sign-in did not work. Try again, or use another way."
        )
        self.reason = reason


def refuse(
    uow: UnitOfWork, reason: str, ip: str | None, practice: PracticeId | None = None
) -> OidcRefused:
    """Audit a refused OIDC sign-in (reason code only) and commit; the error to raise."""
    uow.rollback()
    uow.audit.record(
        Actor.system(practice or PracticeId(0), Via.OIDC),
        "signin.oidc_failed",
        "member",
        None,
        ip=ip,
        reason=reason,
    )
    uow.commit()
    return OidcRefused(reason)


def begin(uow: UnitOfWork, *, link: Actor | None = None) -> str:
    """A started attempt: the browser's pre-auth secret (the caller sets it as a
    cookie); only its hash is stored, for OIDC_REQUEST_TTL."""
    target = None
    if link is not None:
        me = acting_member(uow, link).member
        if not uow.signin.get_security_settings(link.practice_id).members_may_use_oidc:
            raise Forbidden(
                "oidc_not_allowed", "Your practice does not use this sign-in for the team."
            )
        target = Linked(link.practice_id, me.party)
        uow.audit.record(link, "oidc.link_started", "member", me.id)
    secret = new_token()
    uow.oidc.insert_request(token_hash(secret), utcnow() + signin.OIDC_REQUEST_TTL, target)
    uow.commit()
    return secret


def consume(uow: UnitOfWork, secret: str, ip: str | None) -> Linked | None:
    """Spend the started attempt (once, within its time); refused otherwise."""
    found, link = uow.oidc.use_request(token_hash(secret), utcnow())
    if not found:
        raise refuse(uow, "request_unknown_or_expired", ip)
    uow.commit()
    return link


def _may_sign_in(uow: UnitOfWork, who: Linked) -> bool:
    try:
        if who.party.kind is PartyKind.CLIENT:
            client = uow.people.get_client(who.practice_id, who.party.id)
            return client.active and client.portal_access
        if who.party.kind is PartyKind.CONTACT:
            contact = uow.people.get_contact(who.practice_id, who.party.id)
            client = uow.people.get_client(who.practice_id, contact.client_id)
            return client.active and contact.portal_access
        if who.party.kind is PartyKind.MEMBER:
            member = uow.people.get_member(who.practice_id, who.party.id)
            settings = uow.signin.get_security_settings(who.practice_id)
            return member.active and settings.members_may_use_oidc
    except NotFound:
        return False
    return False


def complete(
    uow: UnitOfWork, claims: Claims, link: Linked | None, *, ip: str | None
) -> tuple[str, Actor]:
    """A validated id token → a session (or `SecondFactorRequired` for a member with a
    second factor). See the module docstring for the linking rules."""
    if not claims.email_verified:
        raise refuse(uow, "email_not_verified", ip)
    known = uow.oidc.find_identity(claims.issuer, claims.subject)
    if link is not None:
        if known is not None and known != link:
            raise refuse(uow, "already_linked_elsewhere", ip, link.practice_id)
        if known is None:
            uow.oidc.insert_identity(link.practice_id, link.party, claims.issuer, claims.subject)
            actor = Actor(link.practice_id, link.party, Via.OIDC, ip)
            uow.audit.record(actor, "oidc.linked", link.party.kind.value, link.party.id)
        who = link
    elif known is not None:
        who = known
    else:
        matches = uow.people.find_client_side_by_email(claims.email) if claims.email else []
        if len(matches) != 1:
            raise refuse(uow, "no_match" if not matches else "ambiguous_email", ip)
        who = matches[0]
        uow.oidc.insert_identity(who.practice_id, who.party, claims.issuer, claims.subject)
        actor = Actor(who.practice_id, who.party, Via.OIDC, ip)
        uow.audit.record(actor, "oidc.linked", who.party.kind.value, who.party.id, by="email")
    if not _may_sign_in(uow, who):
        raise refuse(uow, "account_not_allowed", ip, who.practice_id)
    uow.oidc.touch_identity(who.practice_id, claims.issuer, claims.subject)
    if who.party.kind is PartyKind.MEMBER:
        member = uow.people.get_member(who.practice_id, who.party.id)
        if uow.signin.has_second_factor(who.practice_id, member.id):
            challenge = start_second_step(uow, member, Via.OIDC, ip)
            uow.commit()
            raise signin.SecondFactorRequired(challenge)
    actor = Actor(who.practice_id, who.party, Via.OIDC, ip)
    session_id = new_token()
    uow.sessions.insert_session(who.practice_id, who.party, Via.OIDC, token_hash(session_id))
    uow.audit.record(actor, "session.started", who.party.kind.value, who.party.id)
    uow.commit()
    return session_id, actor
