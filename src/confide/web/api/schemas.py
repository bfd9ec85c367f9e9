"""Wire schemas of the JSON API (kept apart from domain objects and tables)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from confide.domain.actors import Party
from confide.domain.entities import (
    AccessLevel,
    Client,
    Contact,
    Member,
    Message,
    Plan,
    Practice,
    Role,
)
from confide.domain.records import ChartNote
from confide.services.audit_trail import AuditEntry
from confide.services.directory import PartyInfo, member_label

# Generous wire limits; the domain applies the exact rules (MS1 counts after emoji).
Text = Annotated[str, StringConstraints(max_length=20_000)]
Name = Annotated[str, StringConstraints(max_length=1000)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Id = Annotated[int, Field(ge=1, le=2**62)]
# Strict models refuse "1" for 1 and 1 for true; enum values still come as JSON strings.
RoleIn = Annotated[Role, Field(strict=False)]
AccessLevelIn = Annotated[AccessLevel, Field(strict=False)]


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


# -- auth ---------------------------------------------------------------------------------


class LoginIn(In):
    email: Name
    password: Annotated[str, StringConstraints(max_length=1000)]


class ApiTokenIn(In):
    name: Name = "API token"


class ApiTokenOut(BaseModel):
    id: int
    token: str


class PartyOut(BaseModel):
    kind: Literal["member", "client", "contact"]
    id: int
    name: str
    label: str
    away: bool = False
    away_text: str | None = None

    @classmethod
    def of(cls, info: PartyInfo) -> "PartyOut":
        return cls(
            kind=info.party.kind.value,
            id=info.party.id,
            name=info.name,
            label=info.label,
            away=info.away_on,
            away_text=info.away_text,
        )


class MeOut(BaseModel):
    kind: Literal["member", "client", "contact"]
    id: int
    practice_id: int
    name: str
    roles: list[Role] = []
    access_level: AccessLevel | None = None
    away: bool = False
    away_text: str | None = None


# -- practice ---------------------------------------------------------------------------


class PracticeOut(BaseModel):
    id: int
    name: str
    plan: Plan
    team_messaging: bool
    client_messaging: bool
    auto_allow_new_clients: bool

    @classmethod
    def of(cls, p: Practice) -> "PracticeOut":
        return cls(
            id=p.id,
            name=p.name,
            plan=p.plan,
            team_messaging=p.team_messaging,
            client_messaging=p.client_messaging,
            auto_allow_new_clients=p.auto_allow_new_clients,
        )


class MessagingSwitchesIn(In):
    team_messaging: bool | None = None
    client_messaging: bool | None = None
    auto_allow_new_clients: bool | None = None


# -- team -------------------------------------------------------------------------------


class MemberOut(BaseModel):
    id: int
    name: str
    email: str
    roles: list[Role]
    role_label: str
    access_level: AccessLevel | None
    export_client_data: bool
    messaging_enabled: bool
    active: bool
    away: bool

    @classmethod
    def of(cls, m: Member) -> "MemberOut":
        return cls(
            id=m.id,
            name=m.name,
            email=m.email,
            roles=sorted(m.roles),
            role_label=member_label(m),
            access_level=m.access_level,
            export_client_data=m.export_client_data,
            messaging_enabled=m.messaging_enabled,
            active=m.active,
            away=m.away_on,
        )


class MemberIn(In):
    name: Name
    email: Name
    roles: Annotated[list[RoleIn], Field(min_length=1, max_length=6)]
    access_level: AccessLevelIn | None = None
    export_client_data: bool = False
    password: Annotated[str, StringConstraints(max_length=1000)] | None = None


class MemberPatch(In):
    roles: Annotated[list[RoleIn], Field(min_length=1, max_length=6)] | None = None
    access_level: AccessLevelIn | None = None
    export_client_data: bool | None = None
    active: bool | None = None


class MemberMessagingIn(In):
    enabled: bool


class SupervisionIn(In):
    supervisee_id: Id
    on: bool = True


class AwayIn(In):
    on: bool | None = None
    text: Annotated[str, StringConstraints(max_length=5000)] | None = None


# -- clients -----------------------------------------------------------------------------


class ClientOut(BaseModel):
    id: int
    name: str
    email: str | None
    primary_clinician_id: int | None
    portal_access: bool
    messaging_enabled: bool
    active: bool

    @classmethod
    def of(cls, c: Client) -> "ClientOut":
        return cls(
            id=c.id,
            name=c.name,
            email=c.email,
            primary_clinician_id=c.primary_clinician_id,
            portal_access=c.portal_access,
            messaging_enabled=c.messaging_enabled,
            active=c.active,
        )


class ContactOut(BaseModel):
    id: int
    client_id: int
    name: str
    email: str | None
    relationship: str
    portal_access: bool
    messaging_enabled: bool

    @classmethod
    def of(cls, c: Contact) -> "ContactOut":
        return cls(
            id=c.id,
            client_id=c.client_id,
            name=c.name,
            email=c.email,
            relationship=c.relationship,
            portal_access=c.portal_access,
            messaging_enabled=c.messaging_enabled,
        )


class ClientDetailOut(ClientOut):
    contacts: list[ContactOut]
    granted_member_ids: list[int]
    may_edit: bool


class ClientIn(In):
    name: Name
    email: Name | None = None
    primary_clinician_id: Id | None = None


class PortalIn(In):
    portal_access: bool | None = None
    messaging_enabled: bool | None = None


class ContactIn(In):
    name: Name
    email: Name | None = None
    relationship: Name = ""
    portal_access: bool = False
    messaging_enabled: bool = False


class GrantsOut(BaseModel):
    member_ids: list[int]


# -- conversations ------------------------------------------------------------------------


class MessageOut(BaseModel):
    id: int
    seq: int
    sender: PartyOut | None
    text: str | None = Field(description="null once removed (MS6)")
    created_at: datetime
    removed: bool
    removed_at: datetime | None = None
    unreadable: bool = Field(
        default=False, description="the stored text failed its integrity check (RC2)"
    )

    @classmethod
    def of(cls, m: Message, people: dict[Party, PartyInfo]) -> "MessageOut":
        info = people.get(m.sender)
        return cls._of(m, PartyOut.of(info) if info else None)

    @classmethod
    def many(cls, messages: list[Message], people: dict[Party, PartyInfo]) -> list["MessageOut"]:
        """A page's messages: each sender's `PartyOut` is made once, not per message
        (a model costs ~5 us to validate; a page holds up to 100 messages)."""
        senders = {party: PartyOut.of(info) for party, info in people.items()}
        return [cls._of(m, senders.get(m.sender)) for m in messages]

    @classmethod
    def _of(cls, m: Message, sender: PartyOut | None) -> "MessageOut":
        return cls(
            id=m.id,
            seq=m.seq,
            sender=sender,
            text=None if m.removed else m.text,
            created_at=m.created_at,
            removed=m.removed,
            removed_at=m.removed_at,
            unreadable=m.unreadable,
        )


class ConversationOut(BaseModel):
    id: int
    client_id: int | None
    participants: list[PartyOut]
    last_seq: int
    last_activity_at: datetime
    unread: int


class ConversationPageOut(BaseModel):
    conversation: ConversationOut
    messages: list[MessageOut]
    has_older: bool
    may_reply: bool
    reply_refusal: str | None


class ConversationListOut(BaseModel):
    conversations: list[ConversationOut]


class StartConversationIn(In):
    member_ids: Annotated[list[Id], Field(max_length=50)] = []
    client_id: Id | None = None
    contact_id: Id | None = None
    text: Text
    idempotency_key: Key


class SendIn(In):
    text: Text
    idempotency_key: Key


class SentOut(BaseModel):
    conversation_id: int
    message: MessageOut
    created: bool


class ReadIn(In):
    seq: Annotated[int, Field(ge=0, le=2**31 - 1)]


class UnreadOut(BaseModel):
    unread: int


class RecipientsOut(BaseModel):
    recent: list[PartyOut]
    members: list[PartyOut]
    clients: list[PartyOut]


# Searches take their term in the body, never in the URL (docs/security.md, "Search
# terms stay out of URLs"): a URL reaches access logs, proxies and browser history.
SearchTerm = Annotated[str, StringConstraints(max_length=100)]


class ClientSearchIn(In):
    q: SearchTerm = ""
    limit: Annotated[int, Field(ge=1, le=500)] = 200


class RecipientSearchIn(In):
    q: SearchTerm = ""
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class EmojiSearchIn(In):
    prefix: Annotated[str, StringConstraints(min_length=1, max_length=40)]


class EmojiSuggestion(BaseModel):
    code: str  # ":grin:"
    emoji: str  # "😁"


class EmojiOut(BaseModel):
    suggestions: list[EmojiSuggestion]


PathId = Annotated[int, Path(ge=1, le=2**62)]


# -- records: transcripts and chart notes (TR1-TR3) -----------------------------------------


def record_party(info: PartyInfo | None) -> PartyOut | None:
    """A person as the records show them: name and label, no away status."""
    if info is None:
        return None
    return PartyOut(kind=info.party.kind.value, id=info.party.id, name=info.name, label=info.label)


class TranscriptMessageOut(BaseModel):
    id: int
    conversation_id: int
    seq: int
    sender: PartyOut | None
    text: str | None = Field(description="kept after removal: this is the records path (MS6)")
    created_at: datetime
    removed: bool
    removed_at: datetime | None = None
    removed_by: PartyOut | None = None
    unreadable: bool = False

    @classmethod
    def of(cls, m: Message, people: dict[Party, PartyInfo]) -> "TranscriptMessageOut":
        return cls(
            id=m.id,
            conversation_id=m.conversation_id,
            seq=m.seq,
            sender=record_party(people.get(m.sender)),
            text=m.text,
            created_at=m.created_at,
            removed=m.removed,
            removed_at=m.removed_at,
            removed_by=record_party(people.get(m.removed_by)) if m.removed_by else None,
            unreadable=m.unreadable,
        )


class TranscriptConversationOut(BaseModel):
    id: int
    participants: list[PartyOut]
    last_activity_at: datetime


class TranscriptOut(BaseModel):
    client_id: int
    participants: list[PartyOut] = Field(description="everyone in the client's conversations")
    chosen: list[str] = Field(description="the chosen participants, as kind:id")
    conversations: list[TranscriptConversationOut]
    messages: list[TranscriptMessageOut]
    next_cursor: str | None = Field(description="pass as `after` for the next page")


class ChartNoteIn(In):
    message_ids: Annotated[list[Id], Field(min_length=1, max_length=200)]


class ChartNoteEntryOut(BaseModel):
    message_id: int
    conversation_id: int
    seq: int
    sender_kind: Literal["member", "client", "contact"]
    sender_id: int
    sender_name: str
    sender_label: str
    sent_at: datetime
    text: str | None = Field(description="null only when the message was unreadable (RC2)")
    removed: bool
    removed_at: datetime | None = None
    removed_by_name: str | None = None


class ChartNoteOut(BaseModel):
    id: int
    client_id: int
    created_by: PartyOut | None
    created_at: datetime
    entries: list[ChartNoteEntryOut]
    unreadable: bool = False

    @classmethod
    def of(cls, note: ChartNote, created_by: PartyInfo | None) -> "ChartNoteOut":
        return cls(
            id=note.id,
            client_id=note.client_id,
            created_by=record_party(created_by),
            created_at=note.created_at,
            entries=[
                ChartNoteEntryOut(
                    message_id=e.message_id,
                    conversation_id=e.conversation_id,
                    seq=e.seq,
                    sender_kind=e.sender.kind.value,
                    sender_id=e.sender.id,
                    sender_name=e.sender_name,
                    sender_label=e.sender_label,
                    sent_at=e.sent_at,
                    text=e.text,
                    removed=e.removed,
                    removed_at=e.removed_at,
                    removed_by_name=e.removed_by_name,
                )
                for e in note.entries
            ],
            unreadable=note.unreadable,
        )


class ChartNoteListOut(BaseModel):
    chart_notes: list[ChartNoteOut]
    next_before_id: int | None = Field(description="pass as `before_id` for older notes")


# -- the audit trail (RC1, issue 7) ----------------------------------------------------------


class AuditActorOut(BaseModel):
    kind: str = Field(description="member, client, contact or system")
    id: int
    name: str | None = Field(description="the current name; null when no longer known")
    label: str | None = Field(description='role label, such as "Practice manager"')


class AuditTargetOut(BaseModel):
    kind: str
    id: int | None


class AuditEventOut(BaseModel):
    seq: int = Field(description="position in the practice's chain; pages use before_seq")
    at: datetime
    actor: AuditActorOut
    via: str = Field(description="how the actor authenticated")
    authenticated_entity: str | None
    action: str
    target: AuditTargetOut
    ip: str | None
    meta: dict[str, Any] = Field(description="ids and flags only, never message text")

    @classmethod
    def of(cls, entry: AuditEntry) -> "AuditEventOut":
        e, who = entry.event, entry.who
        return cls(
            seq=e.seq,
            at=e.at,
            actor=AuditActorOut(
                kind=e.actor_kind,
                id=e.actor_id,
                name=who.name if who else None,
                label=who.label if who else None,
            ),
            via=e.via,
            authenticated_entity=e.authenticated_entity,
            action=e.action,
            target=AuditTargetOut(kind=e.target_kind, id=e.target_id),
            ip=e.ip,
            meta=entry.meta,
        )


class AuditLogOut(BaseModel):
    events: list[AuditEventOut]
    next_before_seq: int | None = Field(description="pass as `before_seq` for older events")
