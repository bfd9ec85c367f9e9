"""Web Push subscriptions and preferences (NT4), and the push consumer's cursor."""

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, or_, select, update

from confide.domain.actors import Party, PartyKind
from confide.domain.ids import PracticeId
from confide.store.clock import aware, aware_or_none, utcnow
from confide.store.repos import scope_only
from confide.store.tables import (
    JobCursorRow,
    ParticipantRow,
    PushPreferenceRow,
    PushSubscriptionRow,
)


def endpoint_hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    practice_id: PracticeId
    party: Party
    endpoint: str
    p256dh: str
    auth: str


class PushRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def put_subscription(
        self, practice_id: PracticeId, party: Party, endpoint: str, p256dh: str, auth: str
    ) -> int:
        """One row per endpoint (a browser profile): subscribing again replaces it, and
        a device that changed hands belongs to whoever subscribed it last."""
        digest = endpoint_hash(endpoint)
        self.conn.execute(
            delete(PushSubscriptionRow).where(PushSubscriptionRow.endpoint_hash == digest)
        )
        return int(
            self.conn.execute(
                insert(PushSubscriptionRow)
                .values(
                    practice_id=practice_id,
                    party_kind=party.kind.value,
                    party_id=party.id,
                    endpoint=endpoint,
                    endpoint_hash=digest,
                    p256dh=p256dh,
                    auth=auth,
                    created_at=utcnow(),
                )
                .returning(PushSubscriptionRow.id)
            ).scalar_one()
        )

    def delete_subscription(self, practice_id: PracticeId, party: Party, sub_id: int) -> bool:
        result = self.conn.execute(
            delete(PushSubscriptionRow).where(
                PushSubscriptionRow.practice_id == practice_id,
                PushSubscriptionRow.party_kind == party.kind.value,
                PushSubscriptionRow.party_id == party.id,
                PushSubscriptionRow.id == sub_id,
            )
        )
        return bool(result.rowcount)

    def delete_gone(self, practice_id: PracticeId, sub_id: int, endpoint: str) -> bool:
        """The push service said 404/410: the subscription is gone for good."""
        result = self.conn.execute(
            delete(PushSubscriptionRow).where(
                PushSubscriptionRow.practice_id == practice_id,
                PushSubscriptionRow.id == sub_id,
                PushSubscriptionRow.endpoint_hash == endpoint_hash(endpoint),
            )
        )
        return bool(result.rowcount)

    def list_subscriptions(
        self, practice_id: PracticeId, parties: Collection[Party]
    ) -> list[Subscription]:
        if not parties:
            return []
        wanted = {(p.kind.value, p.id) for p in parties}
        rows = self.conn.execute(
            select(PushSubscriptionRow.__table__).where(
                PushSubscriptionRow.practice_id == practice_id,
                PushSubscriptionRow.party_id.in_([p.id for p in parties]),
            )
        )
        return [
            Subscription(
                r.id,
                PracticeId(r.practice_id),
                Party(PartyKind(r.party_kind), r.party_id),
                r.endpoint,
                r.p256dh,
                r.auth,
            )
            for r in rows
            if (r.party_kind, r.party_id) in wanted
        ]

    def count_subscriptions(self, practice_id: PracticeId, party: Party) -> int:
        return len(self.list_subscriptions(practice_id, [party]))

    def conversations_with_subscribers(
        self, practice_id: PracticeId, conversation_ids: Collection[int]
    ) -> set[int]:
        """Which of these conversations have a participant with a push subscription
        (one query for a batch of new messages; most have none)."""
        if not conversation_ids:
            return set()
        rows = self.conn.execute(
            select(ParticipantRow.conversation_id)
            .distinct()
            .join(
                PushSubscriptionRow,
                (PushSubscriptionRow.practice_id == ParticipantRow.practice_id)
                & (PushSubscriptionRow.party_kind == ParticipantRow.party_kind)
                & (PushSubscriptionRow.party_id == ParticipantRow.party_id),
            )
            .where(
                scope_only(ParticipantRow.practice_id) == practice_id,
                ParticipantRow.conversation_id.in_(sorted(set(conversation_ids))),
            )
        )
        return {int(r[0]) for r in rows}

    def get_preferences(self, practice_id: PracticeId, party: Party) -> dict[str, bool]:
        return {
            t: bool(on)
            for t, on in self.conn.execute(
                select(PushPreferenceRow.push_type, PushPreferenceRow.enabled).where(
                    PushPreferenceRow.practice_id == practice_id,
                    PushPreferenceRow.party_kind == party.kind.value,
                    PushPreferenceRow.party_id == party.id,
                )
            )
        }

    def set_preference(
        self, practice_id: PracticeId, party: Party, push_type: str, enabled: bool
    ) -> None:
        where = (
            PushPreferenceRow.practice_id == practice_id,
            PushPreferenceRow.party_kind == party.kind.value,
            PushPreferenceRow.party_id == party.id,
            PushPreferenceRow.push_type == push_type,
        )
        done = self.conn.execute(update(PushPreferenceRow).where(*where).values(enabled=enabled))
        if not done.rowcount:
            self.conn.execute(
                insert(PushPreferenceRow).values(
                    practice_id=practice_id,
                    party_kind=party.kind.value,
                    party_id=party.id,
                    push_type=push_type,
                    enabled=enabled,
                )
            )

    # -- the consumer's cursor over the event log (one lease at a time) ------------------

    def lease_cursor(self, name: str, now: datetime, until: datetime, head: int) -> int | None:
        """Take the named cursor's lease (free or lapsed); its position, or None while
        another process holds it. A new cursor starts at `head` (no pushes for history)."""
        self.conn.execute(
            select(JobCursorRow.name).where(JobCursorRow.name == name).with_for_update()
        ).first()
        row = self.conn.execute(
            select(JobCursorRow.position, JobCursorRow.leased_until).where(
                JobCursorRow.name == name
            )
        ).one_or_none()
        if row is None:
            self.conn.execute(
                insert(JobCursorRow).values(name=name, position=head, leased_until=until)
            )
            return head
        if row.leased_until is not None and aware(row.leased_until) > now:
            return None
        self.conn.execute(
            update(JobCursorRow).where(JobCursorRow.name == name).values(leased_until=until)
        )
        return int(row.position)

    def peek_cursor(self, name: str) -> tuple[int, datetime | None] | None:
        """The named cursor's position and lease end (None: no cursor yet), read
        without taking anything."""
        row = self.conn.execute(
            select(JobCursorRow.position, JobCursorRow.leased_until).where(
                JobCursorRow.name == name
            )
        ).one_or_none()
        return None if row is None else (int(row.position), aware_or_none(row.leased_until))

    def advance_free_cursor(self, name: str, seen: int, to: int, now: datetime) -> bool:
        """Move the cursor from `seen` to `to` if it is still at `seen` and nobody holds
        its lease (a compare-and-set: one write, no lease taken); whether it moved."""
        result = self.conn.execute(
            update(JobCursorRow)
            .where(
                JobCursorRow.name == name,
                JobCursorRow.position == seen,
                or_(JobCursorRow.leased_until.is_(None), JobCursorRow.leased_until <= now),
            )
            .values(position=to, leased_until=None)
        )
        return bool(result.rowcount)

    def release_cursor(self, name: str, position: int) -> None:
        self.conn.execute(
            update(JobCursorRow)
            .where(JobCursorRow.name == name)
            .values(position=position, leased_until=None)
        )
