"""Notification state: one row per email per unread streak (NT2, NT3), and the two
settings (a member's "email me about new secure messages", the practice's "name the
practice in notifications"). Announcement alerts (AN1) are claimed in the same table.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from confide.domain.actors import Party
from confide.domain.ids import MemberId, PracticeId
from confide.store.clock import aware, utcnow
from confide.store.tables import (
    MemberNotificationPrefRow,
    MessageRow,
    NotificationRow,
    PracticeNotificationSettingRow,
)

ANNOUNCEMENT_CHANNEL = "announcement_email"


@dataclass(frozen=True, slots=True)
class UnreadHead:
    """The oldest message a party has not read in a conversation."""

    seq: int
    created_at: datetime


class NotificationRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _upsert(self, table: type, values: dict[str, object], keys: list[str]) -> None:
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        update_values = {k: v for k, v in values.items() if k not in keys}
        stmt = dialect.insert(table).values(**values)
        self.conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update_values))

    # -- settings ------------------------------------------------------------------------

    def get_name_practice(self, practice_id: PracticeId) -> bool:
        value = self.conn.execute(
            select(PracticeNotificationSettingRow.name_practice).where(
                PracticeNotificationSettingRow.practice_id == practice_id
            )
        ).scalar()
        return bool(value)  # off by default (NT1)

    def set_name_practice(self, practice_id: PracticeId, on: bool) -> None:
        self._upsert(
            PracticeNotificationSettingRow,
            {"practice_id": practice_id, "name_practice": on},
            ["practice_id"],
        )

    def get_email_new_messages(self, practice_id: PracticeId, member_id: MemberId) -> bool:
        value = self.conn.execute(
            select(MemberNotificationPrefRow.email_new_messages).where(
                MemberNotificationPrefRow.practice_id == practice_id,
                MemberNotificationPrefRow.member_id == member_id,
            )
        ).scalar()
        return True if value is None else bool(value)  # on by default (NT3)

    def set_email_new_messages(
        self, practice_id: PracticeId, member_id: MemberId, on: bool
    ) -> None:
        self._upsert(
            MemberNotificationPrefRow,
            {"practice_id": practice_id, "member_id": member_id, "email_new_messages": on},
            ["practice_id", "member_id"],
        )

    # -- unread streaks ------------------------------------------------------------------

    def first_unread(
        self, practice_id: PracticeId, conversation_id: int, party: Party, *, after_seq: int
    ) -> UnreadHead | None:
        """The first message after `after_seq` that `party` did not send and that was
        not removed (MS7's rule of unread)."""
        row = self.conn.execute(
            select(MessageRow.seq, MessageRow.created_at)
            .where(
                MessageRow.practice_id == practice_id,
                MessageRow.conversation_id == conversation_id,
                MessageRow.seq > after_seq,
                MessageRow.removed_at.is_(None),
                ~(
                    (MessageRow.sender_kind == party.kind.value)
                    & (MessageRow.sender_id == party.id)
                ),
            )
            .order_by(MessageRow.seq)
            .limit(1)
        ).one_or_none()
        return None if row is None else UnreadHead(row.seq, aware(row.created_at))

    def claim_notification(
        self,
        practice_id: PracticeId,
        *,
        conversation_id: int,
        party: Party,
        channel: str,
        streak: int,
        reason: str,
        job_id: int,
    ) -> int | None:
        """Claim the one email of a streak before sending it. Returns the row id when
        this job should send: a new claim, or its own earlier claim whose send never
        finished (its worker died and the job came back). None: sent already, or
        claimed by another job (which sends it, or will when it comes back)."""
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        keys = ["practice_id", "conversation_id", "party_kind", "party_id", "channel", "streak"]
        self.conn.execute(
            dialect.insert(NotificationRow)
            .values(
                practice_id=practice_id,
                conversation_id=conversation_id,
                party_kind=party.kind.value,
                party_id=party.id,
                channel=channel,
                streak=streak,
                reason=reason,
                state="sending",
                job_id=job_id,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=keys)
        )
        row = self.conn.execute(
            select(NotificationRow.id, NotificationRow.state, NotificationRow.job_id).where(
                NotificationRow.practice_id == practice_id,
                NotificationRow.conversation_id == conversation_id,
                NotificationRow.party_kind == party.kind.value,
                NotificationRow.party_id == party.id,
                NotificationRow.channel == channel,
                NotificationRow.streak == streak,
            )
        ).one()
        if row.state == "sent" or row.job_id != job_id:
            return None
        return int(row.id)

    def claim_announcement_email(
        self, practice_id: PracticeId, *, announcement_id: int, party: Party, job_id: int
    ) -> int | None:
        """Claim the one email alert of an announcement for a client (AN1), like a
        streak's email: the same table and rules, with channel `announcement_email`,
        whose `conversation_id` column holds the announcement's id (the unique key then
        reads "one alert per announcement and client") and streak 0."""
        return self.claim_notification(
            practice_id,
            conversation_id=announcement_id,
            party=party,
            channel=ANNOUNCEMENT_CHANNEL,
            streak=0,
            reason="an1",
            job_id=job_id,
        )

    def mark_sent(self, practice_id: PracticeId, notification_id: int) -> None:
        self.conn.execute(
            update(NotificationRow)
            .where(
                NotificationRow.practice_id == practice_id, NotificationRow.id == notification_id
            )
            .values(state="sent", sent_at=utcnow())
        )
