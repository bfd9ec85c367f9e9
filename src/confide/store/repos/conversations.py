"""Conversations, their participants and messages (text encrypted at rest, RC2)."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from confide.domain.actors import Party, PartyKind
from confide.domain.entities import Conversation, Message, Participant
from confide.domain.errors import NotFound
from confide.domain.ids import ClientId, ConversationId, MessageId, PracticeId
from confide.store.clock import aware, aware_or_none, utcnow
from confide.store.crypto import CorruptCiphertext, KeyRing, message_aad
from confide.store.repos.practices import ensure_data_key
from confide.store.tables import ConversationRow, MessageRow, ParticipantRow, core

log = logging.getLogger("confide.store")


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    conversation: Conversation
    unread: int


def _party(kind: str | None, pid: int | None) -> Party | None:
    if kind is None or pid is None:
        return None
    return Party(PartyKind(kind), pid)


# Hot-path statements are built once (building one costs more than running it).
# One statement for a conversation and its participants (every conversation has at
# least one): a row per participant, the conversation's columns repeated.
_CONVERSATION_WITH_PARTICIPANTS = (
    select(
        ConversationRow.__table__,
        ParticipantRow.party_kind,
        ParticipantRow.party_id,
        ParticipantRow.last_read_seq.label("last_read"),
    )
    .join(
        ParticipantRow,
        and_(
            ParticipantRow.practice_id == ConversationRow.practice_id,
            ParticipantRow.conversation_id == ConversationRow.id,
        ),
    )
    .where(ConversationRow.practice_id == bindparam("pid"), ConversationRow.id == bindparam("cid"))
    .order_by(ParticipantRow.id)
)
_NEXT_SEQ = (
    update(ConversationRow)
    .where(ConversationRow.practice_id == bindparam("pid"), ConversationRow.id == bindparam("cid"))
    .values(last_seq=ConversationRow.last_seq + 1, last_activity_at=bindparam("now"))
    .returning(ConversationRow.last_seq)
)


def _insert_message(dialect: Any) -> Any:
    """MS5 without a read first: a key this sender already used inserts nothing."""
    return (
        dialect.insert(core(MessageRow))
        .on_conflict_do_nothing(
            index_elements=["practice_id", "sender_kind", "sender_id", "idempotency_key"]
        )
        .returning(MessageRow.id)
    )


_INSERT_MESSAGE = {"postgresql": _insert_message(postgresql), "sqlite": _insert_message(sqlite)}
_BY_IDEMPOTENCY_KEY = select(MessageRow.__table__).where(
    MessageRow.practice_id == bindparam("pid"),
    MessageRow.sender_kind == bindparam("kind"),
    MessageRow.sender_id == bindparam("sid"),
    MessageRow.idempotency_key == bindparam("key"),
)
_MARK_READ = (
    update(ParticipantRow)
    .where(
        ParticipantRow.practice_id == bindparam("pid"),
        ParticipantRow.conversation_id == bindparam("cid"),
        ParticipantRow.party_kind == bindparam("kind"),
        ParticipantRow.party_id == bindparam("party"),
        ParticipantRow.last_read_seq < bindparam("seq"),
    )
    .values(last_read_seq=bindparam("seq"))
)


class ConversationRepo:
    def __init__(self, conn: Connection, keys: KeyRing) -> None:
        self.conn = conn
        self.keys = keys

    # -- conversations -----------------------------------------------------------------

    def insert_conversation(
        self,
        practice_id: PracticeId,
        *,
        client_id: ClientId | None,
        started_by: Party,
        participants: Sequence[Party],
    ) -> ConversationId:
        now = utcnow()
        cid = self.conn.execute(
            insert(ConversationRow)
            .values(
                practice_id=practice_id,
                client_id=client_id,
                started_by_kind=started_by.kind.value,
                started_by_id=started_by.id,
                last_seq=0,
                last_activity_at=now,
                created_at=now,
            )
            .returning(ConversationRow.id)
        ).scalar_one()
        self.conn.execute(
            insert(ParticipantRow),
            [
                {
                    "practice_id": practice_id,
                    "conversation_id": cid,
                    "party_kind": p.kind.value,
                    "party_id": p.id,
                    "last_read_seq": 0,
                    "joined_at": now,
                }
                for p in participants
            ],
        )
        return ConversationId(cid)

    def get_conversation(self, practice_id: PracticeId, conversation_id: int) -> Conversation:
        params = {"pid": practice_id, "cid": conversation_id}
        rows = self.conn.execute(_CONVERSATION_WITH_PARTICIPANTS, params).all()
        if not rows:
            raise NotFound("conversation")
        return self._conversation(rows[0], [(r.party_kind, r.party_id, r.last_read) for r in rows])

    @staticmethod
    def _conversation(row: Row[Any], parts: Sequence[tuple[str, int, int]]) -> Conversation:
        return Conversation(
            id=ConversationId(row.id),
            practice_id=PracticeId(row.practice_id),
            client_id=ClientId(row.client_id) if row.client_id is not None else None,
            participants=tuple(Participant(Party(PartyKind(k), i), r) for k, i, r in parts),
            last_seq=row.last_seq,
            last_activity_at=aware(row.last_activity_at),
            started_by=Party(PartyKind(row.started_by_kind), row.started_by_id),
        )

    def list_for_party(
        self, practice_id: PracticeId, party: Party, *, limit: int, before: datetime | None = None
    ) -> list[ConversationSummary]:
        """MS8: the party's conversations, latest activity first, with unread counts."""
        me = (
            select(ParticipantRow.conversation_id, ParticipantRow.last_read_seq)
            .where(
                ParticipantRow.practice_id == practice_id,
                ParticipantRow.party_kind == party.kind.value,
                ParticipantRow.party_id == party.id,
            )
            .subquery()
        )
        stmt = (
            select(ConversationRow.__table__)
            .join(me, me.c.conversation_id == ConversationRow.id)
            .where(ConversationRow.practice_id == practice_id)
            .order_by(ConversationRow.last_activity_at.desc(), ConversationRow.id.desc())
            .limit(limit)
        )
        if before is not None:
            stmt = stmt.where(ConversationRow.last_activity_at < before)
        rows = self.conn.execute(stmt).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        parts = self._participants_of(practice_id, ids)
        unread = self.unread_by_conversation(practice_id, party, ids)
        return [
            ConversationSummary(self._conversation(row, parts[row.id]), unread.get(row.id, 0))
            for row in rows
        ]

    def _participants_of(
        self, practice_id: PracticeId, conversation_ids: Sequence[int]
    ) -> dict[int, list[tuple[str, int, int]]]:
        parts: dict[int, list[tuple[str, int, int]]] = {i: [] for i in conversation_ids}
        for cid, kind, pid, read in self.conn.execute(
            select(
                ParticipantRow.conversation_id,
                ParticipantRow.party_kind,
                ParticipantRow.party_id,
                ParticipantRow.last_read_seq,
            )
            .where(
                ParticipantRow.practice_id == practice_id,
                ParticipantRow.conversation_id.in_(list(conversation_ids)),
            )
            .order_by(ParticipantRow.id)
        ):
            parts[cid].append((kind, pid, read))
        return parts

    @staticmethod
    def _unread(practice_id: PracticeId, party: Party, *columns: Any) -> Select[Any]:
        """MS7: messages after the party's read position, sent by others, not removed."""
        p = ParticipantRow
        return (
            select(*columns)
            .join(
                p,
                and_(
                    p.conversation_id == MessageRow.conversation_id,
                    p.practice_id == MessageRow.practice_id,
                ),
            )
            .where(
                MessageRow.practice_id == practice_id,
                p.party_kind == party.kind.value,
                p.party_id == party.id,
                MessageRow.seq > p.last_read_seq,
                MessageRow.removed_at.is_(None),
                ~and_(MessageRow.sender_kind == party.kind.value, MessageRow.sender_id == party.id),
            )
        )

    def unread_by_conversation(
        self, practice_id: PracticeId, party: Party, conversation_ids: Sequence[int] | None = None
    ) -> dict[int, int]:
        stmt = self._unread(practice_id, party, MessageRow.conversation_id, func.count()).group_by(
            MessageRow.conversation_id
        )
        if conversation_ids is not None:
            stmt = stmt.where(MessageRow.conversation_id.in_(list(conversation_ids)))
        return {cid: n for cid, n in self.conn.execute(stmt)}

    def unread_in(
        self, practice_id: PracticeId, conversation_id: ConversationId, party: Party, *, cap: int
    ) -> int:
        """MS7 for one conversation, counting at most `cap` messages: a reader with
        100,000 unread gets "cap" fast instead of a count over every row."""
        counted = (
            self._unread(practice_id, party, MessageRow.id)
            .where(MessageRow.conversation_id == conversation_id)
            .limit(cap)
            .subquery()
        )
        return int(self.conn.execute(select(func.count()).select_from(counted)).scalar_one())

    def list_client_conversations(
        self, practice_id: PracticeId, client_id: ClientId
    ) -> list[Conversation]:
        """The records path (TR1): every conversation about the client (with the client
        or one of their contacts), oldest first. Team-only conversations have no
        client_id, so they never appear here (TR3)."""
        rows = self.conn.execute(
            select(ConversationRow.__table__)
            .where(
                ConversationRow.practice_id == practice_id,
                ConversationRow.client_id == client_id,
            )
            .order_by(ConversationRow.id)
        ).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        parts = self._participants_of(practice_id, ids)
        return [self._conversation(row, parts[row.id]) for row in rows]

    def list_client_messages_by_id(
        self, practice_id: PracticeId, client_id: ClientId, message_ids: Sequence[int]
    ) -> list[Message]:
        """The records path (TR2): those of `message_ids` that belong to a conversation
        about the client, removed ones with their text (MS6), in transcript order
        (conversation, then seq). Ids of other clients' or team-only conversations are
        simply not found."""
        about_client = select(ConversationRow.id).where(
            ConversationRow.practice_id == practice_id, ConversationRow.client_id == client_id
        )
        rows = self.conn.execute(
            select(MessageRow.__table__)
            .where(
                MessageRow.practice_id == practice_id,
                MessageRow.id.in_(list(message_ids)),
                MessageRow.conversation_id.in_(about_client),
            )
            .order_by(MessageRow.conversation_id, MessageRow.seq)
        ).all()
        return [self._message(r, reveal_removed=True) for r in rows]

    def client_ids_of(
        self, practice_id: PracticeId, conversation_ids: Sequence[int]
    ) -> dict[int, int | None]:
        return {
            cid: client
            for cid, client in self.conn.execute(
                select(ConversationRow.id, ConversationRow.client_id).where(
                    ConversationRow.practice_id == practice_id,
                    ConversationRow.id.in_(list(conversation_ids)),
                )
            )
        }

    def mark_read(
        self, practice_id: PracticeId, conversation_id: ConversationId, party: Party, seq: int
    ) -> bool:
        """Move the read position forward (never back); returns whether it moved."""
        result = self.conn.execute(
            _MARK_READ,
            {
                "pid": practice_id,
                "cid": conversation_id,
                "kind": party.kind.value,
                "party": party.id,
                "seq": seq,
            },
        )
        return bool(result.rowcount)

    def recent_partners(self, practice_id: PracticeId, party: Party, limit: int) -> list[Party]:
        """MS8 "recently messaged": the other parties of the party's latest conversations."""
        mine = select(ParticipantRow.conversation_id).where(
            ParticipantRow.practice_id == practice_id,
            ParticipantRow.party_kind == party.kind.value,
            ParticipantRow.party_id == party.id,
        )
        rows = self.conn.execute(
            select(
                ParticipantRow.party_kind,
                ParticipantRow.party_id,
                func.max(ConversationRow.last_activity_at).label("at"),
            )
            .join(ConversationRow, ConversationRow.id == ParticipantRow.conversation_id)
            .where(
                ParticipantRow.practice_id == practice_id,
                ParticipantRow.conversation_id.in_(mine),
                ~and_(
                    ParticipantRow.party_kind == party.kind.value,
                    ParticipantRow.party_id == party.id,
                ),
            )
            .group_by(ParticipantRow.party_kind, ParticipantRow.party_id)
            .order_by(func.max(ConversationRow.last_activity_at).desc())
            .limit(limit)
        ).all()
        return [Party(PartyKind(k), i) for k, i, _ in rows]

    # -- messages ----------------------------------------------------------------------

    def append_message(
        self,
        practice_id: PracticeId,
        conversation_id: ConversationId,
        *,
        sender: Party,
        text: str,
        idempotency_key: str,
    ) -> Message | None:
        """Give the message the conversation's next sequence number and store it; None
        when this sender already used the idempotency key (MS5): the caller must then
        roll back (the sequence number was taken) and answer with the earlier message.

        The UPDATE … RETURNING takes the conversation's row lock, so concurrent senders
        in one conversation get gapless, ordered sequence numbers.
        """
        now = utcnow()
        seq = self.conn.execute(
            _NEXT_SEQ, {"pid": practice_id, "cid": conversation_id, "now": now}
        ).scalar_one()
        self._ensure_key(practice_id)
        body = self.keys.encrypt(practice_id, text, message_aad(practice_id, conversation_id, seq))
        mid = self.conn.execute(
            _INSERT_MESSAGE[self.conn.dialect.name],
            {
                "practice_id": practice_id,
                "conversation_id": conversation_id,
                "seq": seq,
                "sender_kind": sender.kind.value,
                "sender_id": sender.id,
                "idempotency_key": idempotency_key,
                "body": body,
                "created_at": now,
            },
        ).scalar_one_or_none()
        if mid is None:
            return None
        self.mark_read(practice_id, conversation_id, sender, seq)
        return Message(MessageId(mid), conversation_id, seq, sender, text, now)

    def find_by_idempotency_key(
        self, practice_id: PracticeId, sender: Party, key: str
    ) -> Message | None:
        row = self.conn.execute(
            _BY_IDEMPOTENCY_KEY,
            {"pid": practice_id, "kind": sender.kind.value, "sid": sender.id, "key": key},
        ).one_or_none()
        return None if row is None else self._message(row, reveal_removed=False)

    def get_message(
        self, practice_id: PracticeId, conversation_id: ConversationId, message_id: int
    ) -> Message:
        row = self.conn.execute(
            select(MessageRow.__table__).where(
                MessageRow.practice_id == practice_id,
                MessageRow.conversation_id == conversation_id,
                MessageRow.id == message_id,
            )
        ).one_or_none()
        if row is None:
            raise NotFound("message")
        return self._message(row, reveal_removed=False)

    def list_messages(
        self,
        practice_id: PracticeId,
        conversation_id: ConversationId,
        *,
        before_seq: int | None,
        after_seq: int | None = None,
        limit: int,
        reveal_removed: bool = False,
    ) -> list[Message]:
        """A page of messages in sequence order. Newest page by default; `before_seq`
        pages back, `after_seq` forward (both by the unique (conversation, seq) index)."""
        stmt = select(MessageRow.__table__).where(
            MessageRow.practice_id == practice_id, MessageRow.conversation_id == conversation_id
        )
        if after_seq is not None:
            stmt = stmt.where(MessageRow.seq > after_seq).order_by(MessageRow.seq).limit(limit)
            rows = list(self.conn.execute(stmt))
        else:
            if before_seq is not None:
                stmt = stmt.where(MessageRow.seq < before_seq)
            stmt = stmt.order_by(MessageRow.seq.desc()).limit(limit)
            rows = list(self.conn.execute(stmt))
            rows.reverse()
        return [self._message(r, reveal_removed=reveal_removed) for r in rows]

    def mark_removed(self, practice_id: PracticeId, message_id: MessageId, by: Party) -> datetime:
        now = utcnow()
        self.conn.execute(
            update(MessageRow)
            .where(
                MessageRow.practice_id == practice_id,
                MessageRow.id == message_id,
                MessageRow.removed_at.is_(None),
            )
            .values(removed_at=now, removed_by_kind=by.kind.value, removed_by_id=by.id)
        )
        return now

    def _ensure_key(self, practice_id: int) -> None:
        ensure_data_key(self.conn, self.keys, practice_id)

    def _message(self, row: Row[Any], *, reveal_removed: bool) -> Message:
        removed = row.removed_at is not None
        text = None
        unreadable = False
        if reveal_removed or not removed:
            self._ensure_key(row.practice_id)
            try:
                text = self.keys.decrypt(
                    row.practice_id,
                    row.body,
                    message_aad(row.practice_id, row.conversation_id, row.seq),
                )
            except CorruptCiphertext:
                # Ids only in the log: a damaged or moved body is an integrity incident.
                log.error(
                    "message %s of conversation %s failed authentication",
                    row.id,
                    row.conversation_id,
                )
                unreadable = True
        return Message(
            id=MessageId(row.id),
            conversation_id=ConversationId(row.conversation_id),
            seq=row.seq,
            sender=Party(PartyKind(row.sender_kind), row.sender_id),
            text=text,
            created_at=aware(row.created_at),
            removed_at=aware_or_none(row.removed_at),
            removed_by=_party(row.removed_by_kind, row.removed_by_id),
            unreadable=unreadable,
        )
