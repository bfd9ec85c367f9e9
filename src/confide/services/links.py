"""Email links: one token model for every purpose (PA1, PA2, PA7; password reset,
invitations, and whatever else sends a link by email).

- A token is 256 random bits (url-safe base64); only its SHA-256 is stored.
- Each token is bound to one purpose, one party and, for portal links, one
  conversation; a token of one purpose is unknown to every other purpose.
- It expires at `expires_at` exactly: valid while now < expires_at.
- Single-use purposes are spent by one conditional UPDATE, so of any number of
  concurrent redemptions exactly one succeeds. "Only the newest works" revokes the
  party's earlier open links of the purpose when a new one is issued.
- Opening a link's page changes nothing (`peek_link`); only `redeem_link` uses it, and
  it is called from the page's POST (mail scanners GET and HEAD).
- Issuing and using a link are audited (ids only).

    token = issue_link(uow, practice_id, Purpose.PASSWORD_RESET, party, ttl=...).token
    link = redeem_link(uow, token, Purpose.PASSWORD_RESET, ip=...)   # LinkRefused if not
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from confide.auth.tokens import new_token, token_hash
from confide.domain.actors import Actor, Party, Via
from confide.domain.errors import DomainError
from confide.domain.ids import PracticeId
from confide.store.clock import utcnow
from confide.store.repos.links import StoredLink
from confide.store.uow import UnitOfWork

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{40,64}")


class Purpose(StrEnum):
    PORTAL = "portal_link"  # PA1: read and answer one conversation, 24 hours, reusable
    INSTANT_SIGN_IN = "instant_sign_in"  # PA2: single use, newest only, 10 minutes
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a label, not a secret
    INVITATION = "invitation"


SINGLE_USE = {Purpose.INSTANT_SIGN_IN, Purpose.PASSWORD_RESET, Purpose.INVITATION}
VIA = {
    Purpose.PORTAL: Via.PORTAL_LINK,
    Purpose.INSTANT_SIGN_IN: Via.MAGIC_LINK,
    Purpose.PASSWORD_RESET: Via.MAGIC_LINK,
    Purpose.INVITATION: Via.MAGIC_LINK,
}


class LinkRefused(DomainError):
    """Unknown, of another purpose, expired, used or revoked: one answer for all."""

    status = 410

    def __init__(self) -> None:
        super().__init__(
            "link_expired", "This link has expired or was already used. Ask for a new one."
        )


@dataclass(frozen=True)
class IssuedLink:
    token: str  # shown once, in the email; never stored
    link_id: int
    expires_at: datetime


def well_formed(token: str) -> bool:
    return bool(_TOKEN_SHAPE.fullmatch(token))


def issue_link(
    uow: UnitOfWork,
    practice_id: PracticeId,
    purpose: Purpose,
    party: Party,
    *,
    ttl: timedelta,
    conversation_id: int | None = None,
    newest_only: bool = False,
    now: datetime | None = None,
) -> IssuedLink:
    """A new link, in the caller's transaction (the caller commits)."""
    token = new_token()
    if newest_only:
        uow.links.revoke_links_of(practice_id, party, purpose.value)
    expires_at = (now or utcnow()) + ttl
    link_id = uow.links.insert_link(
        practice_id,
        purpose=purpose.value,
        token_hash=token_hash(token),
        party=party,
        expires_at=expires_at,
        conversation_id=conversation_id,
    )
    uow.audit.record(
        Actor.system(practice_id),
        "link.issued",
        party.kind.value,
        party.id,
        link_id=link_id,
        purpose=purpose.value,
        conversation_id=conversation_id,
    )
    return IssuedLink(token, link_id, expires_at)


def usable(link: StoredLink, now: datetime, *, single_use: bool) -> bool:
    if link.revoked_at is not None or now >= link.expires_at:
        return False
    return not (single_use and link.used_at is not None)


def peek_link(
    uow: UnitOfWork, token: str, purpose: Purpose, *, now: datetime | None = None
) -> StoredLink | None:
    """The link if it can still be used; read-only (the landing page's GET and HEAD)."""
    if not well_formed(token):
        return None
    link = uow.links.find_link(token_hash(token), purpose.value)
    if link is None or not usable(link, now or utcnow(), single_use=purpose in SINGLE_USE):
        return None
    return link


def redeem_link(
    uow: UnitOfWork, token: str, purpose: Purpose, *, ip: str | None, now: datetime | None = None
) -> StoredLink:
    """Use a link (in the caller's transaction; the caller commits). Raises LinkRefused
    for every kind of unusable link alike."""
    now = now or utcnow()
    if not well_formed(token):
        raise LinkRefused()
    link = uow.links.use_link(
        token_hash(token), purpose.value, now=now, single_use=purpose in SINGLE_USE
    )
    if link is None:
        raise LinkRefused()
    uow.audit.record(
        Actor(link.practice_id, link.party, VIA[purpose], ip),
        "link.used",
        link.party.kind.value,
        link.party.id,
        link_id=link.id,
        purpose=purpose.value,
    )
    return link
