"""Conversations, their participants and messages (text encrypted at rest, RC2)."""

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from confide.domain.actors import Party, PartyKind
from confide.domain.entities import Conversation, Message, Participant
from confide.domain.errors import NotFound
from confide.domain.ids import ClientId, ConversationId, MessageId, PracticeId
from confide.store.clock import aware, aware_or_none, utcnow
from confide.store.crypto import CorruptCiphertext, KeyRing, message_aad
from confide.store.hot import HotStatement
from confide.store.repos import scope_only
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
_CONVERSATION_WITH_PARTICIPANTS = HotStatement(
    select(
        ConversationRow.__table__,
        ParticipantRow.party_kind,
        ParticipantRow.party_id,
        ParticipantRow.last_read_seq.label("last_read"),
    )
    .join(
        ParticipantRow,
        and_(
            scope_only(ParticipantRow.practice_id) == ConversationRow.practice_id,
            ParticipantRow.conversation_id == ConversationRow.id,
        ),
    )
    .where(ConversationRow.practice_id == bindparam("pid"), ConversationRow.id == bindparam("cid"))
    .order_by(ParticipantRow.id)
)
_NEXT_SEQ = HotStatement(
    update(ConversationRow)
    .where(ConversationRow.practice_id == bindparam("pid"), ConversationRow.id == bindparam("cid"))
    .values(last_seq=ConversationRow.last_seq + 1, last_activity_at=bindparam("now"))
    .returning(ConversationRow.last_seq)
)


def _insert_message(dialect: Any) -> Any:
    """MS5 without a read first: a key this sender already used inserts nothing."""
    columns = (
        "practice_id conversation_id seq sender_kind sender_id idempotency_key body created_at"
    )
    return (
        dialect.insert(core(MessageRow))
        .values({c: bindparam(c) for c in columns.split()})
        .on_conflict_do_nothing(
            index_elements=["practice_id", "sender_kind", "sender_id", "idempotency_key"]
        )
        .returning(MessageRow.id)
    )


_INSERT_MESSAGE = {
    "postgresql": HotStatement(_insert_message(postgresql)),
    "sqlite": HotStatement(_insert_message(sqlite)),
}
# A conversation's pages (the screen asks for them all the time): newest, older than a
# sequence number (newest first, turned round by the caller), newer than one.
_PAGE = select(MessageRow.__table__).where(
    MessageRow.practice_id == bindparam("pid"), MessageRow.conversation_id == bindparam("cid")
)
_PAGE_NEWEST = HotStatement(
    _PAGE.order_by(MessageRow.seq.desc()).limit(bindparam("limit", type_=Integer))
)
_PAGE_BEFORE = HotStatement(
    _PAGE.where(MessageRow.seq < bindparam("seq"))
    .order_by(MessageRow.seq.desc())
    .limit(bindparam("limit", type_=Integer))
)
_PAGE_AFTER = HotStatement(
    _PAGE.where(MessageRow.seq > bindparam("seq"))
    .order_by(MessageRow.seq)
    .limit(bindparam("limit", type_=Integer))
)
_BY_IDEMPOTENCY_KEY = select(MessageRow.__table__).where(
    MessageRow.practice_id == bindparam("pid"),
    MessageRow.sender_kind == bindparam("kind"),
    MessageRow.sender_id == bindparam("sid"),
    MessageRow.idempotency_key == bindparam("key"),
)
# MS7's unread counts live on the participant rows (`unread_count`: messages after the
# read position, sent by others, not removed), moved by the three writes that change
# them, each under the conversation's row lock on PostgreSQL (a send takes it with
# `_NEXT_SEQ`; reading and removing take it with `_LOCK_CONVERSATION`), so that a count
# is never computed from a snapshot that misses a concurrent change.
_LOCK_CONVERSATION = (
    select(ConversationRow.id)
    .where(ConversationRow.practice_id == bindparam("pid"), ConversationRow.id == bindparam("cid"))
    .with_for_update()
)
_IS_PARTY = and_(
    ParticipantRow.party_kind == bindparam("kind"), ParticipantRow.party_id == bindparam("party")
)
# A new message (seq, the newest): one more unread for every other participant; the
# sender has read up to it, so nothing is unread for them.
_SENT = HotStatement(
    update(ParticipantRow)
    .where(
        scope_only(ParticipantRow.practice_id) == bindparam("pid"),
        ParticipantRow.conversation_id == bindparam("cid"),
    )
    .values(
        last_read_seq=case((_IS_PARTY, bindparam("seq")), else_=ParticipantRow.last_read_seq),
        unread_count=case((_IS_PARTY, 0), else_=ParticipantRow.unread_count + 1),
    )
)
# The read position moves forward to seq (never back); what stays unread is counted
# over the messages after it only.
_UNREAD_AFTER = (
    select(func.count())
    .where(
        MessageRow.practice_id == bindparam("pid"),
        MessageRow.conversation_id == bindparam("cid"),
        MessageRow.seq > bindparam("seq"),
        MessageRow.removed_at.is_(None),
        ~and_(
            MessageRow.sender_kind == bindparam("kind"), MessageRow.sender_id == bindparam("party")
        ),
    )
    .scalar_subquery()
)
_MARK_READ = (
    update(ParticipantRow)
    .where(
        scope_only(ParticipantRow.practice_id) == bindparam("pid"),
        ParticipantRow.conversation_id == bindparam("cid"),
        _IS_PARTY,
        ParticipantRow.last_read_seq < bindparam("seq"),
    )
    .values(last_read_seq=bindparam("seq"), unread_count=_UNREAD_AFTER)
)
# A message removed (MS6): one fewer unread for those who had not read it, but its sender.
_REMOVED = (
    update(ParticipantRow)
    .where(
        scope_only(ParticipantRow.practice_id) == bindparam("pid"),
        ParticipantRow.conversation_id == bindparam("cid"),
        ParticipantRow.last_read_seq < bindparam("seq"),
        ParticipantRow.unread_count > 0,
        ~_IS_PARTY,
    )
    .values(unread_count=ParticipantRow.unread_count - 1)
)
# Rows with something unread, written as the partial index's condition (a literal, not
# a parameter), so that SQLite reads a party's unread rows from `ix_participants_unread`.
_HAS_UNREAD = ParticipantRow.unread_count > literal_column("0")
_UNREAD_OF_PARTY = select(ParticipantRow.conversation_id, ParticipantRow.unread_count).where(
    ParticipantRow.practice_id == bindparam("pid"),
    _IS_PARTY,
    _HAS_UNREAD,
)
# One conversation's (the page's): prebuilt, on the cursor.
_UNREAD_IN_ONE = HotStatement(
    select(ParticipantRow.unread_count).where(
        ParticipantRow.practice_id == bindparam("pid"),
        ParticipantRow.conversation_id == bindparam("cid"),
        _IS_PARTY,
    )
)
_UNREAD_OF_PARTY_IN = _UNREAD_OF_PARTY.where(
    ParticipantRow.conversation_id.in_(bindparam("ids", expanding=True))
)
_UNREAD_OF_PARTIES = select(
    ParticipantRow.party_id, ParticipantRow.conversation_id, ParticipantRow.unread_count
).where(
    ParticipantRow.practice_id == bindparam("pid"),
    ParticipantRow.party_kind == bindparam("kind"),
    ParticipantRow.party_id.in_(bindparam("parties", expanding=True)),
    _HAS_UNREAD,
)
# A batch of conversations (the hub's), their participants, and messages by id.
_CONVERSATIONS_IN = select(ConversationRow.__table__).where(
    scope_only(ConversationRow.practice_id) == bindparam("pid"),
    ConversationRow.id.in_(bindparam("ids", expanding=True)),
)
_PARTICIPANTS_IN = (
    select(
        ParticipantRow.conversation_id,
        ParticipantRow.party_kind,
        ParticipantRow.party_id,
        ParticipantRow.last_read_seq,
    )
    .where(
        scope_only(ParticipantRow.practice_id) == bindparam("pid"),
        ParticipantRow.conversation_id.in_(bindparam("ids", expanding=True)),
    )
    .order_by(ParticipantRow.id)
)
_MESSAGES_IN = select(MessageRow.__table__).where(
    scope_only(MessageRow.practice_id) == bindparam("pid"),
    MessageRow.id.in_(bindparam("ids", expanding=True)),
)


class ConversationRepo:
    def __init__(self, conn: Connection, keys: KeyRing) -> None:
        self.conn = conn
        self.keys = keys
        # An identity map for the unit of work: the hub checks every receiver of every
        # event against the conversation, and a page checks it more than once. Every
        # write to a conversation or its participants goes through this repo and drops
        # it; rollbacks drop them all (`forget`, called by the unit of work).
        self._known: dict[tuple[int, int], Conversation] = {}

    def forget(self) -> None:
        self._known.clear()

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
        if (known := self._known.get((practice_id, conversation_id))) is not None:
            return known
        params = {"pid": practice_id, "cid": conversation_id}
        rows = _CONVERSATION_WITH_PARTICIPANTS.rows(self.conn, params)
        if not rows:
            raise NotFound("conversation")
        conversation = self._conversation(
            rows[0], [(r.party_kind, r.party_id, r.last_read) for r in rows]
        )
        self._known[practice_id, conversation_id] = conversation
        return conversation

    def load_conversations(self, practice_id: PracticeId, conversation_ids: Iterable[int]) -> None:
        """Read these conversations with their participants in one query, for the
        `get_conversation` calls that follow (the hub, for a batch of events)."""
        wanted = sorted({c for c in conversation_ids if (practice_id, c) not in self._known})
        if not wanted:
            return
        rows = self.conn.execute(_CONVERSATIONS_IN, {"pid": practice_id, "ids": wanted}).all()
        parts = self._participants_of(practice_id, [r.id for r in rows])
        for row in rows:
            self._known[practice_id, row.id] = self._conversation(row, parts[row.id])

    def _changed(self, practice_id: PracticeId, conversation_id: int) -> None:
        self._known.pop((practice_id, conversation_id), None)

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
        self,
        practice_id: PracticeId,
        party: Party,
        *,
        limit: int,
        after: tuple[datetime, int] | None = None,
    ) -> list[ConversationSummary]:
        """MS8: the party's conversations, latest activity first (then the newest id),
        with unread counts; `after` the (last activity, id) of the last one already
        read, for the next ones."""
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
        if after is not None:
            at, cid = after
            stmt = stmt.where(
                or_(
                    ConversationRow.last_activity_at < at,
                    and_(ConversationRow.last_activity_at == at, ConversationRow.id < cid),
                )
            )
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
        params = {"pid": practice_id, "ids": list(conversation_ids)}
        for cid, kind, pid, read in self.conn.execute(_PARTICIPANTS_IN, params):
            parts[cid].append((kind, pid, read))
        return parts

    def unread_by_conversation(
        self, practice_id: PracticeId, party: Party, conversation_ids: Sequence[int] | None = None
    ) -> dict[int, int]:
        """MS7: the party's unread count per conversation (those with none left out)."""
        params: dict[str, Any] = {"pid": practice_id, "kind": party.kind.value, "party": party.id}
        stmt = _UNREAD_OF_PARTY
        if conversation_ids is not None:
            stmt, params["ids"] = _UNREAD_OF_PARTY_IN, list(conversation_ids)
        return {cid: n for cid, n in self.conn.execute(stmt, params)}

    def unread_of_parties(
        self, practice_id: PracticeId, parties: Collection[Party]
    ) -> dict[Party, dict[int, int]]:
        """`unread_by_conversation` for many parties of a practice: one query per kind of
        party and 500 parties (the hub's unread totals after a batch)."""
        out: dict[Party, dict[int, int]] = {party: {} for party in parties}
        by_kind: dict[PartyKind, list[int]] = {}
        for party in parties:
            by_kind.setdefault(party.kind, []).append(party.id)
        for kind, ids in by_kind.items():
            for at in range(0, len(ids), 500):
                params = {"pid": practice_id, "kind": kind.value, "parties": ids[at : at + 500]}
                for party_id, cid, n in self.conn.execute(_UNREAD_OF_PARTIES, params):
                    out[Party(kind, party_id)][cid] = n
        return out

    def unread_in(
        self, practice_id: PracticeId, conversation_id: ConversationId, party: Party, *, cap: int
    ) -> int:
        """MS7 for one conversation, at most `cap` (the page shows "999+" past it)."""
        n = _UNREAD_IN_ONE.scalar_one_or_none(
            self.conn,
            {
                "pid": practice_id,
                "cid": conversation_id,
                "kind": party.kind.value,
                "party": party.id,
            },
        )
        return min(n or 0, cap)

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
                scope_only(MessageRow.practice_id) == practice_id,
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
                    scope_only(ConversationRow.practice_id) == practice_id,
                    ConversationRow.id.in_(list(conversation_ids)),
                )
            )
        }

    def mark_read(
        self, practice_id: PracticeId, conversation_id: ConversationId, party: Party, seq: int
    ) -> bool:
        """Move the read position forward (never back); returns whether it moved. The
        unread count left is recounted over the messages after the new position."""
        self._changed(practice_id, conversation_id)
        self._lock(practice_id, conversation_id)
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

    def _lock(self, practice_id: PracticeId, conversation_id: ConversationId) -> None:
        """PostgreSQL: the conversation's row lock, which a send takes too, so the unread
        counts this transaction moves next are computed after any concurrent send or
        removal in the conversation committed. SQLite has one writer at a time."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(_LOCK_CONVERSATION, {"pid": practice_id, "cid": conversation_id})

    def recent_partners(
        self, practice_id: PracticeId, party: Party, limit: int, offset: int = 0
    ) -> list[Party]:
        """MS8 "recently messaged": the other parties of the party's latest conversations,
        the most recent first (then by kind and id: the same order every time, so that
        `offset` goes on where the last call stopped)."""
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
                scope_only(ParticipantRow.practice_id) == practice_id,
                ParticipantRow.conversation_id.in_(mine),
                ~and_(
                    ParticipantRow.party_kind == party.kind.value,
                    ParticipantRow.party_id == party.id,
                ),
            )
            .group_by(ParticipantRow.party_kind, ParticipantRow.party_id)
            .order_by(
                func.max(ConversationRow.last_activity_at).desc(),
                ParticipantRow.party_kind,
                ParticipantRow.party_id,
            )
            .limit(limit)
            .offset(offset)
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
        self._changed(practice_id, conversation_id)
        seq = _NEXT_SEQ.scalar_one(
            self.conn, {"pid": practice_id, "cid": conversation_id, "now": now}
        )
        self._ensure_key(practice_id)
        body = self.keys.encrypt(practice_id, text, message_aad(practice_id, conversation_id, seq))
        mid = _INSERT_MESSAGE[self.conn.dialect.name].scalar_one_or_none(
            self.conn,
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
        )
        if mid is None:
            return None
        _SENT.rows(
            self.conn,
            {
                "pid": practice_id,
                "cid": conversation_id,
                "kind": sender.kind.value,
                "party": sender.id,
                "seq": seq,
            },
        )
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

    def get_messages(
        self, practice_id: PracticeId, message_ids: Iterable[int]
    ) -> dict[MessageId, Message]:
        """These messages of the practice, by id (removed ones without their text); ids
        not found are left out."""
        ids = sorted(set(message_ids))
        if not ids:
            return {}
        rows = self.conn.execute(_MESSAGES_IN, {"pid": practice_id, "ids": ids})
        return {MessageId(r.id): self._message(r, reveal_removed=False) for r in rows}

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
        params = {"pid": practice_id, "cid": conversation_id, "limit": limit}
        if after_seq is not None:
            rows = _PAGE_AFTER.rows(self.conn, {**params, "seq": after_seq})
        else:
            if before_seq is not None:
                rows = _PAGE_BEFORE.rows(self.conn, {**params, "seq": before_seq})
            else:
                rows = _PAGE_NEWEST.rows(self.conn, params)
            rows.reverse()
        return [self._message(r, reveal_removed=reveal_removed) for r in rows]

    def mark_removed(self, practice_id: PracticeId, message: Message, by: Party) -> datetime:
        """MS6: the message is removed (its row and text stay for the record, RC3); it
        is no longer unread for anyone."""
        now = utcnow()
        self._changed(practice_id, message.conversation_id)
        self._lock(practice_id, message.conversation_id)
        result = self.conn.execute(
            update(MessageRow)
            .where(
                MessageRow.practice_id == practice_id,
                MessageRow.id == message.id,
                MessageRow.removed_at.is_(None),
            )
            .values(removed_at=now, removed_by_kind=by.kind.value, removed_by_id=by.id)
        )
        if result.rowcount:
            self.conn.execute(
                _REMOVED,
                {
                    "pid": practice_id,
                    "cid": message.conversation_id,
                    "seq": message.seq,
                    "kind": message.sender.kind.value,
                    "party": message.sender.id,
                },
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
