"""The practice's records: chart notes copied from transcripts (TR2).

A chart note is a copy, made at one moment: names, times and text are copied into the
note when it is created, so the note stays as it was whatever happens to the messages,
the people or their names afterwards (RC3).
"""

from dataclasses import dataclass
from datetime import datetime

from confide.domain.actors import Party
from confide.domain.ids import ClientId, ConversationId, MemberId, MessageId, PracticeId


@dataclass(frozen=True, slots=True)
class ChartNoteEntry:
    """One copied message: who sent it (name and label as they were), when, the text.

    A removed message (MS6) is copied with its text, marked removed by whom and when:
    it is part of the record. `text` is None only when the stored message body failed
    its integrity check (RC2) at copy time.
    """

    message_id: MessageId
    conversation_id: ConversationId
    seq: int
    sender: Party
    sender_name: str
    sender_label: str
    sent_at: datetime
    text: str | None
    removed_at: datetime | None = None
    removed_by: Party | None = None
    removed_by_name: str | None = None

    @property
    def removed(self) -> bool:
        return self.removed_at is not None


@dataclass(frozen=True, slots=True)
class ChartNote:
    id: int
    practice_id: PracticeId
    client_id: ClientId
    created_by: MemberId
    created_at: datetime
    entries: tuple[ChartNoteEntry, ...]
    # The stored body failed authentication (damaged, or moved from another row).
    unreadable: bool = False
