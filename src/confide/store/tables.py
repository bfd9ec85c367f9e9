"""Storage shape only (SQLAlchemy 2 typed declarative). Domain objects live in
`confide.domain.entities`; repos map between the two.

Every table that holds practice data carries `practice_id`, and every query in
`store/repos` filters on it (tests/unit/test_architecture.py checks the repos).
Timestamps are stored as UTC; SQLite returns them naive, so repos normalise on read.
"""

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")
UTC = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def core(row: type[Base]) -> Table:
    """The Core table of a mapped class. Hot-path inserts are built on it: an insert of
    the ORM class pays the ORM's bulk-persistence work at every execution."""
    return cast(Table, row.__table__)


class PracticeRow(Base):
    __tablename__ = "practices"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20))
    team_messaging: Mapped[bool] = mapped_column(Boolean, default=False)
    client_messaging: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_allow_new_clients: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTC)


class PracticeKeyRow(Base):
    """The practice's data key, wrapped (AES-GCM) by the master key (RC2)."""

    __tablename__ = "practice_keys"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTC)


class MemberRow(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    roles: Mapped[str] = mapped_column(String(200))  # comma-separated Role values
    access_level: Mapped[str | None] = mapped_column(String(30))
    export_client_data: Mapped[bool] = mapped_column(Boolean, default=False)
    messaging_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    away_on: Mapped[bool] = mapped_column(Boolean, default=False)
    away_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTC)


class SupervisionRow(Base):
    __tablename__ = "supervisions"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), primary_key=True)
    supervisor_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    supervisee_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)


class ClientRow(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    primary_clinician_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    portal_access: Mapped[bool] = mapped_column(Boolean, default=False)
    messaging_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTC)


class ContactRow(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    relationship: Mapped[str] = mapped_column(String(100), default="")
    portal_access: Mapped[bool] = mapped_column(Boolean, default=False)
    messaging_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTC)


class ClientAccessGrantRow(Base):
    __tablename__ = "client_access_grants"
    # A member's grants (the access rule's facts, on every send by a clinician with
    # basic access): by member, not by walking the practice's grants (the key starts
    # with the client).
    __table_args__ = (
        Index("ix_client_access_grants_member", "practice_id", "member_id", "client_id"),
    )
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    granted_by: Mapped[int] = mapped_column(ForeignKey("members.id"))
    granted_at: Mapped[datetime] = mapped_column(UTC)


class ConversationRow(Base):
    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), index=True)
    started_by_kind: Mapped[str] = mapped_column(String(10))
    started_by_id: Mapped[int] = mapped_column(Id)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_activity_at: Mapped[datetime] = mapped_column(UTC)
    created_at: Mapped[datetime] = mapped_column(UTC)


# The condition of the partial index of unread rows; a query uses the index only when it
# says the same (store/repos/conversations.py, `_HAS_UNREAD`).
UNREAD_WHERE = "unread_count > 0"


class ParticipantRow(Base):
    __tablename__ = "conversation_participants"
    __table_args__ = (
        UniqueConstraint("conversation_id", "party_kind", "party_id"),
        Index("ix_participants_party", "practice_id", "party_kind", "party_id"),
        # A party's unread conversations (the red bubble, the real-time unread totals):
        # only the rows with something unread, a few of a party's hundreds.
        Index(
            "ix_participants_unread",
            "practice_id",
            "party_kind",
            "party_id",
            sqlite_where=text(UNREAD_WHERE),
            postgresql_where=text(UNREAD_WHERE),
        ),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    party_kind: Mapped[str] = mapped_column(String(10))
    party_id: Mapped[int] = mapped_column(Id)
    last_read_seq: Mapped[int] = mapped_column(Integer, default=0)
    # MS7: messages after last_read_seq, sent by others, not removed. Kept by the writes
    # that change it (store/repos/conversations.py), never counted on a read.
    unread_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    joined_at: Mapped[datetime] = mapped_column(UTC)


class MessageRow(Base):
    """A message. `body` is nonce || AES-GCM ciphertext; never plain text (RC2)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        UniqueConstraint(
            "practice_id",
            "sender_kind",
            "sender_id",
            "idempotency_key",
            name="uq_messages_idempotency",
        ),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    seq: Mapped[int] = mapped_column(Integer)
    sender_kind: Mapped[str] = mapped_column(String(10))
    sender_id: Mapped[int] = mapped_column(Id)
    idempotency_key: Mapped[str] = mapped_column(String(100))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTC)
    removed_at: Mapped[datetime | None] = mapped_column(UTC)
    removed_by_kind: Mapped[str | None] = mapped_column(String(10))
    removed_by_id: Mapped[int | None] = mapped_column(Id)


class ChartNoteRow(Base):
    """A chart note on a client's record (TR2): messages copied from a transcript.

    `body` is nonce || AES-GCM ciphertext of the note's JSON (senders' names, times,
    texts as they were when copied); never plain text (RC2). Its associated data names
    the practice, the client and the note id (`crypto.chart_note_aad`), so the row is
    inserted first and its body written once the id is known, in the same transaction.
    """

    __tablename__ = "chart_notes"
    __table_args__ = (Index("ix_chart_notes_client", "practice_id", "client_id", "id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTC)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class AuditRow(Base):
    """Append-only, hash-chained audit log (RC1), one chain per practice (0: system).

    `hash` = HMAC-SHA256(audit key, prev_hash || canonical row); the key derives from
    the master key, so someone with only database access cannot re-forge the chain.
    """

    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("chain_id", "seq"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    chain_id: Mapped[int] = mapped_column(Id)  # practice id, or 0 for practice-less events
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTC)
    actor_kind: Mapped[str] = mapped_column(String(10))
    actor_id: Mapped[int] = mapped_column(Id)
    via: Mapped[str] = mapped_column(String(20))
    authenticated_entity: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    target_kind: Mapped[str] = mapped_column(String(30))
    target_id: Mapped[int | None] = mapped_column(Id)
    ip: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The newest link of each chain; locked FOR UPDATE by every audit write, so a
    chain is extended by one transaction at a time, and truncation is detectable."""

    __tablename__ = "audit_heads"
    chain_id: Mapped[int] = mapped_column(Id, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    # HMAC over (chain, seq, hash): moving the head back to hide a cut-off tail needs
    # the key, which lives outside the database.
    mac: Mapped[str] = mapped_column(String(64))


class OutboxRow(Base):
    """Work that must happen after commit (events, emails, pushes, exports).

    Written in the same transaction as the change that causes it, relayed afterwards.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "done_at", "available_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(Id)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)  # JSON of ids only, never message text
    created_at: Mapped[datetime] = mapped_column(UTC)
    available_at: Mapped[datetime] = mapped_column(UTC)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[datetime | None] = mapped_column(UTC)
    done_at: Mapped[datetime | None] = mapped_column(UTC)
    last_error: Mapped[str | None] = mapped_column(String(500))


class SessionRow(Base):
    """Server-side sessions; only the SHA-256 of the session id is stored (PA7)."""

    __tablename__ = "sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    party_kind: Mapped[str] = mapped_column(String(10))
    party_id: Mapped[int] = mapped_column(Id)
    via: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTC)
    last_seen_at: Mapped[datetime] = mapped_column(UTC)
    ended_at: Mapped[datetime | None] = mapped_column(UTC)


class ApiTokenRow(Base):
    """Personal API tokens of team members; only the SHA-256 is stored (PA7)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTC)
    last_used_at: Mapped[datetime | None] = mapped_column(UTC)
    revoked_at: Mapped[datetime | None] = mapped_column(UTC)


class EventRow(Base):
    """The event log read by WebSocket hubs (docs/realtime.md): relayed from the outbox
    after commit. `position` is the cursor a client resumes from; the single relay
    assigns positions in its commit order, so a reader never misses a row that commits
    later. `payload` holds ids only, never message text or names.

    AUTOINCREMENT on SQLite: a position is never reused, even after old rows are pruned.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_practice_position", "practice_id", "position"),
        Index("ix_events_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )
    position: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    practice_id: Mapped[int] = mapped_column(Id)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)  # JSON of ids only
    created_at: Mapped[datetime] = mapped_column(UTC)


# --- data exports, announcements (issue 7; migration 0006) ------------------------------


class DataExportRow(Base):
    """A practice data export (EX1-EX6): a background job and, once done, an AES-256
    zip in the export folder (`file_name`, relative to it).

    `status`: queued → generating → ready | failed (a crashed run's lease runs out and the
    job is claimed again, up to a few attempts); ready → expired | deleted once the file
    is gone. `password` is nonce || AES-GCM ciphertext of the archive password under the
    practice's data key, kept only until the archive is written (RC2, EX3).
    """

    __tablename__ = "data_exports"
    __table_args__ = (
        Index("ix_data_exports_practice", "practice_id", "id"),
        Index("ix_data_exports_status", "status", "claimed_until"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    requested_by: Mapped[int] = mapped_column(ForeignKey("members.id"))
    scope: Mapped[str] = mapped_column(String(20))  # "practice" | "clinician"
    clinician_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    password_protected: Mapped[bool] = mapped_column(Boolean)
    password: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20))
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[datetime | None] = mapped_column(UTC)
    error: Mapped[str | None] = mapped_column(String(200))  # a reason code, never PHI
    file_name: Mapped[str | None] = mapped_column(String(200))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    messages: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTC)
    started_at: Mapped[datetime | None] = mapped_column(UTC)
    finished_at: Mapped[datetime | None] = mapped_column(UTC)
    expires_at: Mapped[datetime | None] = mapped_column(UTC)
    deleted_at: Mapped[datetime | None] = mapped_column(UTC)


class AnnouncementRow(Base):
    """An announcement to clients (AN1, plus plan). `body` is nonce || AES-GCM ciphertext
    bound to the practice and the announcement id (RC2), like a chart note."""

    __tablename__ = "announcements"
    __table_args__ = (Index("ix_announcements_practice", "practice_id", "id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    audience: Mapped[str] = mapped_column(String(20))  # "all_clients" | "my_clients"
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTC)


class AnnouncementRecipientRow(Base):
    """Who an announcement went to, fixed when it was sent (the active clients then)."""

    __tablename__ = "announcement_recipients"
    __table_args__ = (Index("ix_announcement_recipients_client", "practice_id", "client_id"),)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    announcement_id: Mapped[int] = mapped_column(ForeignKey("announcements.id"), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), primary_key=True)


# Filtered audit-trail queries on very large logs (issue 7; docs/security.md, "Indexes
# of the audit log", has the measured query plans): each filter of
# `AuditLogRepo.list_events` walks its own index within the practice's chain, newest
# first by `seq`, so a filter that matches nothing in a long chain costs a few index
# pages instead of a scan of the chain. The action index uses the pattern operator
# class on PostgreSQL (exact names and LIKE prefixes under any collation); a prefix
# filter ("message.") uses the expression index `ix_audit_log_action_family`, created
# on PostgreSQL only by migration 0006 (SQLite has no split_part).
Index("ix_audit_log_actor", AuditRow.chain_id, AuditRow.actor_kind, AuditRow.actor_id, AuditRow.seq)
Index(
    "ix_audit_log_action",
    AuditRow.chain_id,
    AuditRow.action,
    AuditRow.seq,
    postgresql_ops={"action": "varchar_pattern_ops"},
)
Index(
    "ix_audit_log_target",
    AuditRow.chain_id,
    AuditRow.target_kind,
    AuditRow.target_id,
    AuditRow.seq,
)
Index("ix_audit_log_target_kind", AuditRow.chain_id, AuditRow.target_kind, AuditRow.seq)
Index("ix_audit_log_at", AuditRow.chain_id, AuditRow.at)
# --- sign-in, second factor, sessions, OIDC and Web Push (issue 5, NT4; migration 0005) ---


class PracticeSecurityRow(Base):
    """A practice's sign-in settings; no row means the defaults (second factor not
    required, 15 minutes idle, team members sign in with a password only)."""

    __tablename__ = "practice_security"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), primary_key=True)
    require_second_factor: Mapped[bool] = mapped_column(Boolean, default=False)
    session_idle_minutes: Mapped[int] = mapped_column(Integer, default=15)
    members_may_use_oidc: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTC)


class MemberTotpRow(Base):
    """A team member's TOTP secret (PA4), encrypted with the practice's data key
    (nonce || AES-GCM, associated data naming practice and member). `confirmed_at` is
    set once a code proved the authenticator app has it; `last_step` is the newest
    time step used, so a code is never accepted twice."""

    __tablename__ = "member_totp"
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTC)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTC)
    last_step: Mapped[int | None] = mapped_column(BigInteger)


class RecoveryCodeRow(Base):
    """Single-use recovery codes of the second factor; only SHA-256 is stored (PA7)."""

    __tablename__ = "recovery_codes"
    __table_args__ = (Index("ix_recovery_codes_member", "practice_id", "member_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTC)
    used_at: Mapped[datetime | None] = mapped_column(UTC)


class SigninChallengeRow(Base):
    """The pending step of a two-step sign-in (password accepted, code awaited): keyed
    by the SHA-256 of the pending cookie; grants nothing but the second step."""

    __tablename__ = "signin_challenges"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    via: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTC)
    expires_at: Mapped[datetime] = mapped_column(UTC)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None] = mapped_column(UTC)


class SigninFailureRow(Base):
    """Failed sign-in attempts, for rate limits and lockout shared by every process.
    `key` is `account:<sha256 of the email>` (known or not: the same limits for both,
    so a lockout tells nothing) or `ip:<address>`."""

    __tablename__ = "signin_failures"
    __table_args__ = (Index("ix_signin_failures_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTC)


class OidcRequestRow(Base):
    """A started OIDC sign-in (PA3): keyed by the SHA-256 of the pre-auth cookie, from
    which state, nonce and the PKCE verifier are derived (none of them is stored)."""

    __tablename__ = "oidc_requests"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTC)
    expires_at: Mapped[datetime] = mapped_column(UTC)
    used_at: Mapped[datetime | None] = mapped_column(UTC)
    # Set when a signed-in person links their OIDC account (instead of signing in).
    link_practice_id: Mapped[int | None] = mapped_column(Id)
    link_party_kind: Mapped[str | None] = mapped_column(String(10))
    link_party_id: Mapped[int | None] = mapped_column(Id)


class OidcIdentityRow(Base):
    """An OIDC account linked to a Confide person, by (issuer, subject)."""

    __tablename__ = "oidc_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_oidc_identities_sub"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    party_kind: Mapped[str] = mapped_column(String(10))
    party_id: Mapped[int] = mapped_column(Id)
    issuer: Mapped[str] = mapped_column(String(300))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTC)
    last_used_at: Mapped[datetime | None] = mapped_column(UTC)


class PushSubscriptionRow(Base):
    """A Web Push subscription of one device (NT4), owned by the person who made it."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (
        Index("ix_push_subscriptions_party", "practice_id", "party_kind", "party_id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    party_kind: Mapped[str] = mapped_column(String(10))
    party_id: Mapped[int] = mapped_column(Id)
    endpoint: Mapped[str] = mapped_column(Text)
    endpoint_hash: Mapped[str] = mapped_column(String(64), unique=True)
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTC)


class PushPreferenceRow(Base):
    """Per-person push types turned off or on (no row: the default, on)."""

    __tablename__ = "push_preferences"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), primary_key=True)
    party_kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    party_id: Mapped[int] = mapped_column(Id, primary_key=True)
    push_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)


class JobCursorRow(Base):
    """How far a post-commit consumer of the event log got (`push`: Web Push), with a
    lease so one process at a time works on a batch."""

    __tablename__ = "job_cursors"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    leased_until: Mapped[datetime | None] = mapped_column(UTC)


# --- Jobs, mail and email links (issues 5 and 6, branch `mail`; migration 0004) --------


class JobRow(Base):
    """The durable job queue (jobs/runner.py): written in the same transaction as the
    change that causes it, claimed with a lease (`locked_until`; FOR UPDATE SKIP LOCKED
    on PostgreSQL), retried with exponential backoff. `dedupe_key`, when set, makes
    enqueueing idempotent: a second job with the same key is not added.
    `payload` is JSON of ids only (never message text, names or addresses)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "done_at", "run_after"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(Id)  # 0: not about one practice
    kind: Mapped[str] = mapped_column(String(60))
    payload: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    run_after: Mapped[datetime] = mapped_column(UTC)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=25)
    locked_until: Mapped[datetime | None] = mapped_column(UTC)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTC)
    done_at: Mapped[datetime | None] = mapped_column(UTC)
    failed_at: Mapped[datetime | None] = mapped_column(UTC)
    last_error: Mapped[str | None] = mapped_column(String(100))  # exception type name only


class LinkTokenRow(Base):
    """Email links (services/links.py): 256 random bits, only the SHA-256 is stored
    (PA7); bound to one purpose, one party and (portal links) one conversation."""

    __tablename__ = "link_tokens"
    __table_args__ = (Index("ix_link_tokens_party", "practice_id", "party_kind", "party_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    purpose: Mapped[str] = mapped_column(String(30))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    party_kind: Mapped[str] = mapped_column(String(10))
    party_id: Mapped[int] = mapped_column(Id)
    conversation_id: Mapped[int | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(UTC)
    expires_at: Mapped[datetime] = mapped_column(UTC)
    used_at: Mapped[datetime | None] = mapped_column(UTC)
    revoked_at: Mapped[datetime | None] = mapped_column(UTC)


class LinkSessionRow(Base):
    """A session started from a portal link (PA1, PA6): limited to one conversation
    and to the link's lifetime."""

    __tablename__ = "link_sessions"
    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    link_id: Mapped[int] = mapped_column(ForeignKey("link_tokens.id"))
    conversation_id: Mapped[int] = mapped_column(Id)
    expires_at: Mapped[datetime] = mapped_column(UTC)


class NotificationRow(Base):
    """One row per email sent for an unread streak (NT2, NT3): the unique key makes it
    one email per streak. A streak is named by the recipient's read position when it
    began (`streak`); `state` goes 'sending' -> 'sent'. Only the claiming job sends
    (and, if its worker died, sends again when the job comes back)."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint(
            "practice_id",
            "conversation_id",
            "party_kind",
            "party_id",
            "channel",
            "streak",
            name="uq_notifications_streak",
        ),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    conversation_id: Mapped[int] = mapped_column(Id)
    party_kind: Mapped[str] = mapped_column(String(10))
    party_id: Mapped[int] = mapped_column(Id)
    channel: Mapped[str] = mapped_column(String(30))  # client_email | member_email
    streak: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(10))  # nt2 | nt3
    state: Mapped[str] = mapped_column(String(10))
    job_id: Mapped[int] = mapped_column(Id)  # the job that claimed it (and resends it)
    created_at: Mapped[datetime] = mapped_column(UTC)
    sent_at: Mapped[datetime | None] = mapped_column(UTC)


class MemberNotificationPrefRow(Base):
    """NT3: "email me about new secure messages" (on when no row exists)."""

    __tablename__ = "member_notification_prefs"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    email_new_messages: Mapped[bool] = mapped_column(Boolean, default=True)


class PracticeNotificationSettingRow(Base):
    """NT1: "name the practice in notifications" (off when no row exists)."""

    __tablename__ = "practice_notification_settings"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), primary_key=True)
    name_practice: Mapped[bool] = mapped_column(Boolean, default=False)


class SignInRequestRow(Base):
    """Requests for emailed links (PA2, password reset), for rate limits: the address
    and the IP only as keyed hashes."""

    __tablename__ = "sign_in_requests"
    __table_args__ = (
        Index("ix_sign_in_requests_ip", "ip_hash", "created_at"),
        Index("ix_sign_in_requests_email", "email_hash", "created_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(30))
    email_hash: Mapped[str] = mapped_column(String(64))
    ip_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTC)
