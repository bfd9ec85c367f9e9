"""The practice's records: chart notes (TR2), their bodies encrypted at rest (RC2).

A note's body is the JSON of its copied messages (names, times, texts as they were),
encrypted with the practice's data key. Its associated data names the practice, the
client and the note id, so `insert_chart_note` inserts the row, then writes the body
bound to the new id, in the caller's transaction: nobody ever sees the placeholder.
"""

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from confide.domain.actors import Party, PartyKind
from confide.domain.ids import ClientId, ConversationId, MemberId, MessageId, PracticeId
from confide.domain.records import ChartNote, ChartNoteEntry
from confide.store.clock import aware, utcnow
from confide.store.crypto import CorruptCiphertext, KeyRing, chart_note_aad
from confide.store.repos.practices import ensure_data_key
from confide.store.tables import ChartNoteRow

log = logging.getLogger("confide.store")

BODY_VERSION = 1


def _party(text: str | None) -> Party | None:
    if text is None:
        return None
    kind, _, pid = text.partition(":")
    return Party(PartyKind(kind), int(pid))


def _time(text: str | None) -> datetime | None:
    return None if text is None else aware(datetime.fromisoformat(text))


def _encode(entries: Sequence[ChartNoteEntry]) -> str:
    return json.dumps(
        {
            "v": BODY_VERSION,
            "entries": [
                {
                    "message_id": e.message_id,
                    "conversation_id": e.conversation_id,
                    "seq": e.seq,
                    "sender": str(e.sender),
                    "sender_name": e.sender_name,
                    "sender_label": e.sender_label,
                    "sent_at": e.sent_at.isoformat(),
                    "text": e.text,
                    "removed_at": e.removed_at.isoformat() if e.removed_at else None,
                    "removed_by": str(e.removed_by) if e.removed_by else None,
                    "removed_by_name": e.removed_by_name,
                }
                for e in entries
            ],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _decode(text: str) -> tuple[ChartNoteEntry, ...]:
    data = json.loads(text)
    out = []
    for e in data["entries"]:
        kind, _, sender_id = e["sender"].partition(":")
        out.append(
            ChartNoteEntry(
                message_id=MessageId(e["message_id"]),
                conversation_id=ConversationId(e["conversation_id"]),
                seq=e["seq"],
                sender=Party(PartyKind(kind), int(sender_id)),
                sender_name=e["sender_name"],
                sender_label=e["sender_label"],
                sent_at=aware(datetime.fromisoformat(e["sent_at"])),
                text=e["text"],
                removed_at=_time(e["removed_at"]),
                removed_by=_party(e["removed_by"]),
                removed_by_name=e["removed_by_name"],
            )
        )
    return tuple(out)


class RecordsRepo:
    def __init__(self, conn: Connection, keys: KeyRing) -> None:
        self.conn = conn
        self.keys = keys

    def insert_chart_note(
        self,
        practice_id: PracticeId,
        client_id: ClientId,
        *,
        created_by: MemberId,
        entries: Sequence[ChartNoteEntry],
    ) -> ChartNote:
        """Store a note, stamped now. Runs inside the caller's transaction."""
        created_at = utcnow()
        note_id = self.conn.execute(
            insert(ChartNoteRow)
            .values(
                practice_id=practice_id,
                client_id=client_id,
                created_by=created_by,
                created_at=created_at,
                body=b"",  # replaced below, before anyone else can see the row
            )
            .returning(ChartNoteRow.id)
        ).scalar_one()
        self._ensure_key(practice_id)
        body = self.keys.encrypt(
            practice_id, _encode(entries), chart_note_aad(practice_id, client_id, note_id)
        )
        self.conn.execute(
            update(ChartNoteRow)
            .where(ChartNoteRow.practice_id == practice_id, ChartNoteRow.id == note_id)
            .values(body=body)
        )
        return ChartNote(
            int(note_id), practice_id, client_id, created_by, created_at, tuple(entries)
        )

    def list_chart_notes(
        self,
        practice_id: PracticeId,
        client_id: ClientId,
        *,
        limit: int,
        before_id: int | None = None,
    ) -> list[ChartNote]:
        """The client's chart notes, newest first; `before_id` pages back."""
        stmt = select(ChartNoteRow.__table__).where(
            ChartNoteRow.practice_id == practice_id, ChartNoteRow.client_id == client_id
        )
        if before_id is not None:
            stmt = stmt.where(ChartNoteRow.id < before_id)
        rows = self.conn.execute(stmt.order_by(ChartNoteRow.id.desc()).limit(limit)).all()
        return [self._note(r) for r in rows]

    def clients_with_chart_notes(
        self, practice_id: PracticeId, client_ids: Sequence[int]
    ) -> set[int]:
        """Which of these clients have at least one chart note (the data export)."""
        if not client_ids:
            return set()
        rows = self.conn.execute(
            select(ChartNoteRow.client_id)
            .where(
                ChartNoteRow.practice_id == practice_id,
                ChartNoteRow.client_id.in_(list(client_ids)),
            )
            .distinct()
        )
        return {int(r) for (r,) in rows}

    def list_chart_notes_oldest_first(
        self, practice_id: PracticeId, client_id: ClientId, *, after_id: int, limit: int
    ) -> list[ChartNote]:
        """The client's chart notes in the order they were made, a page at a time after
        `after_id` (the data export reads them this way, in short read transactions)."""
        stmt = (
            select(ChartNoteRow.__table__)
            .where(
                ChartNoteRow.practice_id == practice_id,
                ChartNoteRow.client_id == client_id,
                ChartNoteRow.id > after_id,
            )
            .order_by(ChartNoteRow.id)
            .limit(limit)
        )
        return [self._note(r) for r in self.conn.execute(stmt).all()]

    def _ensure_key(self, practice_id: int) -> None:
        ensure_data_key(self.conn, self.keys, practice_id)

    def _note(self, row: Row[Any]) -> ChartNote:
        self._ensure_key(row.practice_id)
        entries: tuple[ChartNoteEntry, ...] = ()
        unreadable = False
        try:
            entries = _decode(
                self.keys.decrypt(
                    row.practice_id,
                    row.body,
                    chart_note_aad(row.practice_id, row.client_id, row.id),
                )
            )
        except CorruptCiphertext:
            # Ids only in the log: a damaged or moved body is an integrity incident.
            log.error("chart note %s failed authentication", row.id)
            unreadable = True
        return ChartNote(
            id=row.id,
            practice_id=PracticeId(row.practice_id),
            client_id=ClientId(row.client_id),
            created_by=MemberId(row.created_by),
            created_at=aware(row.created_at),
            entries=entries,
            unreadable=unreadable,
        )
