"""Who acts. Every use case receives an explicit Actor (STYLE habit 5)."""

from dataclasses import dataclass
from enum import StrEnum

from confide.domain.ids import PracticeId


class PartyKind(StrEnum):
    MEMBER = "member"
    CLIENT = "client"
    CONTACT = "contact"
    SYSTEM = "system"


class Via(StrEnum):
    """How the actor proved who they are; recorded on every audit row."""

    PASSWORD = "password"  # noqa: S105 - a label, not a secret
    API_TOKEN = "api_token"  # noqa: S105 - a label, not a secret
    PORTAL_LINK = "portal_link"
    MAGIC_LINK = "magic_link"
    OIDC = "oidc"
    # Two-step sign-in: the first factor, then the TOTP second factor (PA4).
    PASSWORD_TOTP = "password_totp"  # noqa: S105 - a label, not a secret
    OIDC_TOTP = "oidc_totp"
    CLI = "cli"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Party:
    """One side of a conversation: a team member, a client or a client's contact."""

    kind: PartyKind
    id: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def member(cls, member_id: int) -> "Party":
        return cls(PartyKind.MEMBER, member_id)


@dataclass(frozen=True, slots=True)
class Actor:
    practice_id: PracticeId
    party: Party
    via: Via
    ip: str | None = None
    # The person who authenticated, when it differs from the party acted as
    # (an operator running the CLI on a practice's behalf, say).
    authenticated_entity: str | None = None
    # A session started from a portal link (PA1, PA6) reaches one conversation only:
    # its id. None for every other actor.
    conversation_scope: int | None = None

    @property
    def kind(self) -> PartyKind:
        return self.party.kind

    @property
    def is_member(self) -> bool:
        return self.party.kind is PartyKind.MEMBER

    @property
    def is_client_side(self) -> bool:
        return self.party.kind in (PartyKind.CLIENT, PartyKind.CONTACT)

    @classmethod
    def system(cls, practice_id: PracticeId, via: Via = Via.INTERNAL) -> "Actor":
        return cls(practice_id, Party(PartyKind.SYSTEM, 0), via)
