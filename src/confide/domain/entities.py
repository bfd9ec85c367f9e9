"""Plain, frozen domain objects. The store maps rows to these; nothing here does I/O."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from confide.domain.actors import Party, PartyKind
from confide.domain.ids import (
    ClientId,
    ContactId,
    ConversationId,
    MemberId,
    MessageId,
    PracticeId,
)

DEFAULT_AWAY_TEXT = (
    "Thank you for your message. I am away at the moment and will reply as soon as I "
    "can. If this is an emergency, call 911 or go to your nearest emergency room; in a "
    "crisis, call or text 988."
)


class Plan(StrEnum):
    STARTER = "starter"
    ESSENTIAL = "essential"
    PLUS = "plus"


class Role(StrEnum):
    ACCOUNT_OWNER = "account_owner"
    CLINICIAN = "clinician"
    SUPERVISOR = "supervisor"
    PRACTICE_MANAGER = "practice_manager"
    BILLER = "biller"
    SCHEDULER = "scheduler"


class AccessLevel(StrEnum):
    """A clinician's access level (only meaningful with the clinician role)."""

    ENTIRE_PRACTICE = "entire_practice"
    FULL_CLIENT_LIST = "full_client_list"
    BILLING = "billing"
    BASIC = "basic"


@dataclass(frozen=True, slots=True)
class Practice:
    id: PracticeId
    name: str
    plan: Plan
    team_messaging: bool = False
    client_messaging: bool = False
    auto_allow_new_clients: bool = False


@dataclass(frozen=True, slots=True)
class Member:
    id: MemberId
    practice_id: PracticeId
    name: str
    email: str
    roles: frozenset[Role]
    access_level: AccessLevel | None = None
    export_client_data: bool = False
    messaging_enabled: bool = True
    active: bool = True
    away_on: bool = False
    away_text: str = DEFAULT_AWAY_TEXT

    @property
    def party(self) -> Party:
        return Party(PartyKind.MEMBER, self.id)

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def is_clinician(self) -> bool:
        return Role.CLINICIAN in self.roles


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """A member plus the relations the policy needs to decide access to clients."""

    member: Member
    granted_client_ids: frozenset[ClientId] = field(default_factory=frozenset)
    supervisee_ids: frozenset[MemberId] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Client:
    id: ClientId
    practice_id: PracticeId
    name: str
    email: str | None
    primary_clinician_id: MemberId | None
    portal_access: bool = False
    messaging_enabled: bool = False
    active: bool = True

    @property
    def party(self) -> Party:
        return Party(PartyKind.CLIENT, self.id)


@dataclass(frozen=True, slots=True)
class Contact:
    """Someone who messages the practice about a client (guardian, partner …)."""

    id: ContactId
    practice_id: PracticeId
    client_id: ClientId
    name: str
    email: str | None
    relationship: str = ""
    portal_access: bool = False
    messaging_enabled: bool = False

    @property
    def party(self) -> Party:
        return Party(PartyKind.CONTACT, self.id)


@dataclass(frozen=True, slots=True)
class Participant:
    party: Party
    last_read_seq: int = 0


@dataclass(frozen=True, slots=True)
class Conversation:
    id: ConversationId
    practice_id: PracticeId
    # The client the conversation is about; None for a team-only conversation (TR3).
    client_id: ClientId | None
    participants: tuple[Participant, ...]
    last_seq: int
    last_activity_at: datetime
    started_by: Party

    @property
    def is_team_only(self) -> bool:
        return self.client_id is None

    def participant(self, party: Party) -> Participant | None:
        for p in self.participants:
            if p.party == party:
                return p
        return None

    @property
    def member_ids(self) -> tuple[MemberId, ...]:
        return tuple(
            MemberId(p.party.id) for p in self.participants if p.party.kind is PartyKind.MEMBER
        )

    @property
    def client_party(self) -> Party | None:
        for p in self.participants:
            if p.party.kind in (PartyKind.CLIENT, PartyKind.CONTACT):
                return p.party
        return None


@dataclass(frozen=True, slots=True)
class Message:
    id: MessageId
    conversation_id: ConversationId
    seq: int
    sender: Party
    # None once removed (MS6): removed text never leaves the records path.
    text: str | None
    created_at: datetime
    removed_at: datetime | None = None
    removed_by: Party | None = None
    # The stored body failed authentication (damaged or moved between rows): shown as
    # unreadable, never as another message's text.
    unreadable: bool = False

    @property
    def removed(self) -> bool:
        return self.removed_at is not None
