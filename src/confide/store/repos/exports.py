"""Data exports (EX1-EX6): the job rows, and the reads that feed the archive.

`ExportRepo` is scoped to one practice, like every repo. `ExportQueue` is the job
claimer's view across practices (like `EventLog` for the relay): it claims the next
export to run (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several workers never take
the same one; on SQLite the single writer lock serialises claims), and finds
downloads whose time is up.

The archive password is kept encrypted under the practice's data key (AES-GCM, bound
to the export's row), only until the archive is written, then erased (EX3, RC2).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, or_, select, update

from confide.domain.actors import Party, PartyKind
from confide.domain.errors import NotFound
from confide.domain.exports import MAX_ATTEMPTS, DataExport, ExportScope, ExportStatus
from confide.domain.ids import ClientId, ConversationId, MemberId, PracticeId
from confide.store.clock import aware, aware_or_none, utcnow
from confide.store.crypto import CorruptCiphertext, KeyRing, message_aad
from confide.store.repos import scope_only
from confide.store.repos.practices import ensure_data_key
from confide.store.tables import (
    ClientRow,
    ConversationRow,
    DataExportRow,
    MessageRow,
    ParticipantRow,
)

log = logging.getLogger("confide.store")


def password_aad(practice_id: int, export_id: int) -> bytes:
    return f"confide:export-password:{practice_id}:{export_id}".encode()


def _export(row: Row[Any]) -> DataExport:
    return DataExport(
        id=row.id,
        practice_id=PracticeId(row.practice_id),
        requested_by=MemberId(row.requested_by),
        scope=ExportScope(row.scope),
        clinician_id=MemberId(row.clinician_id) if row.clinician_id is not None else None,
        password_protected=row.password_protected,
        status=ExportStatus(row.status),
        progress=row.progress,
        attempts=row.attempts,
        error=row.error,
        file_name=row.file_name,
        file_size=row.file_size,
        messages=row.messages,
        created_at=aware(row.created_at),
        started_at=aware_or_none(row.started_at),
        finished_at=aware_or_none(row.finished_at),
        expires_at=aware_or_none(row.expires_at),
    )


class ExportedMessage(NamedTuple):
    """One message as the archive writes it: removed ones with their text (MS6); `text`
    None when the stored body failed its integrity check (RC2). Times are UTC, naive
    (the hot path formats a million of them)."""

    seq: int
    sender: Party
    text: str | None
    created_at: datetime
    removed_at: datetime | None
    removed_by: Party | None


# The export's hot path (a million rows): built once, read as plain tuples.
_EXPORT_PAGE = (
    select(
        MessageRow.id,
        MessageRow.seq,
        MessageRow.sender_kind,
        MessageRow.sender_id,
        MessageRow.body,
        MessageRow.created_at,
        MessageRow.removed_at,
        MessageRow.removed_by_kind,
        MessageRow.removed_by_id,
    )
    .where(
        MessageRow.practice_id == bindparam("pid"),
        MessageRow.conversation_id == bindparam("cid"),
        MessageRow.seq > bindparam("after"),
        MessageRow.seq <= bindparam("upto"),
    )
    .order_by(MessageRow.seq)
    .limit(bindparam("limit"))
)


def _naive_utc(value: datetime) -> datetime:
    # SQLite hands back naive UTC; PostgreSQL aware times in the session's zone.
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class TeamConversation:
    id: ConversationId
    last_seq: int
    members: frozenset[Party]


class ExportRepo:
    def __init__(self, conn: Connection, keys: KeyRing) -> None:
        self.conn = conn
        self.keys = keys

    # -- the job rows --------------------------------------------------------------------

    def insert_export(
        self,
        practice_id: PracticeId,
        *,
        requested_by: MemberId,
        scope: ExportScope,
        clinician_id: MemberId | None,
        password: str | None,
    ) -> DataExport:
        """A queued export. The password is encrypted bound to the new row's id, in the
        caller's transaction (nobody sees the row before it commits)."""
        export_id = self.conn.execute(
            insert(DataExportRow)
            .values(
                practice_id=practice_id,
                requested_by=requested_by,
                scope=scope.value,
                clinician_id=clinician_id,
                password_protected=password is not None,
                password=None,
                status=ExportStatus.QUEUED.value,
                progress=0,
                attempts=0,
                created_at=utcnow(),
            )
            .returning(DataExportRow.id)
        ).scalar_one()
        if password is not None:
            ensure_data_key(self.conn, self.keys, practice_id)
            sealed = self.keys.encrypt(practice_id, password, password_aad(practice_id, export_id))
            self._set(practice_id, export_id, password=sealed)
        return self.get_export(practice_id, export_id)

    def get_export(self, practice_id: PracticeId, export_id: int) -> DataExport:
        row = self.conn.execute(
            select(DataExportRow.__table__).where(
                DataExportRow.practice_id == practice_id, DataExportRow.id == export_id
            )
        ).one_or_none()
        if row is None:
            raise NotFound("export")
        return _export(row)

    def list_exports(self, practice_id: PracticeId, *, limit: int) -> list[DataExport]:
        rows = self.conn.execute(
            select(DataExportRow.__table__)
            .where(DataExportRow.practice_id == practice_id)
            .order_by(DataExportRow.id.desc())
            .limit(limit)
        )
        return [_export(r) for r in rows]

    def reveal_password(self, practice_id: PracticeId, export_id: int) -> str | None:
        """The archive password, for the job that writes the archive (None: none)."""
        sealed = self.conn.execute(
            select(DataExportRow.password).where(
                DataExportRow.practice_id == practice_id, DataExportRow.id == export_id
            )
        ).scalar_one_or_none()
        if sealed is None:
            return None
        ensure_data_key(self.conn, self.keys, practice_id)
        return self.keys.decrypt(practice_id, sealed, password_aad(practice_id, export_id))

    def mark_progress(
        self, practice_id: PracticeId, export_id: int, *, progress: int, lease_until: datetime
    ) -> bool:
        """Record progress and renew the run's lease; False when the export is no longer
        running (claimed again after a lost lease): the run must stop."""
        result = self.conn.execute(
            update(DataExportRow)
            .where(
                DataExportRow.practice_id == practice_id,
                DataExportRow.id == export_id,
                DataExportRow.status == ExportStatus.GENERATING.value,
            )
            .values(progress=max(0, min(progress, 99)), claimed_until=lease_until)
        )
        return bool(result.rowcount)

    def mark_done(
        self,
        practice_id: PracticeId,
        export_id: int,
        *,
        file_name: str,
        file_size: int,
        messages: int,
        finished_at: datetime,
        expires_at: datetime,
    ) -> None:
        """Ready to download; the password is erased (it was shown once, EX3)."""
        self._set(
            practice_id,
            export_id,
            status=ExportStatus.READY.value,
            progress=100,
            file_name=file_name,
            file_size=file_size,
            messages=messages,
            finished_at=finished_at,
            expires_at=expires_at,
            claimed_until=None,
            password=None,
            error=None,
        )

    def mark_failed(self, practice_id: PracticeId, export_id: int, *, error: str) -> None:
        """Failed for good, with a reason code (never PHI); the password is erased."""
        self._set(
            practice_id,
            export_id,
            status=ExportStatus.FAILED.value,
            error=error[:200],
            finished_at=utcnow(),
            claimed_until=None,
            password=None,
        )

    def mark_retry(self, practice_id: PracticeId, export_id: int, *, error: str) -> None:
        """Back to the queue after a failed run (another attempt follows)."""
        self._set(
            practice_id,
            export_id,
            status=ExportStatus.QUEUED.value,
            error=error[:200],
            progress=0,
            claimed_until=None,
        )

    def mark_gone(self, practice_id: PracticeId, export_id: int, status: ExportStatus) -> None:
        """The file was removed: `expired` or `deleted` (the row stays, RC3)."""
        self._set(practice_id, export_id, status=status.value, deleted_at=utcnow())

    def _set(self, practice_id: PracticeId, export_id: int, **values: object) -> None:
        self.conn.execute(
            update(DataExportRow)
            .where(DataExportRow.practice_id == practice_id, DataExportRow.id == export_id)
            .values(**values)
        )

    # -- what goes into the archive --------------------------------------------------------

    def list_export_messages(
        self,
        practice_id: PracticeId,
        conversation_id: ConversationId,
        *,
        after_seq: int,
        upto_seq: int,
        limit: int,
    ) -> list[ExportedMessage]:
        """A page of the conversation's messages with `after_seq < seq <= upto_seq`, in
        order, decrypted (removed ones too: the export is the practice's record). The
        export's hot path: one prepared statement, tuples, no entity mapping."""
        ensure_data_key(self.conn, self.keys, practice_id)
        rows = self.conn.execute(
            _EXPORT_PAGE,
            {
                "pid": practice_id,
                "cid": conversation_id,
                "after": after_seq,
                "upto": upto_seq,
                "limit": limit,
            },
        ).all()
        parties: dict[tuple[str, int], Party] = {}

        def party(kind: str, pid: int) -> Party:
            found = parties.get((kind, pid))
            if found is None:
                found = parties[(kind, pid)] = Party(PartyKind(kind), pid)
            return found

        out = []
        for mid, seq, kind, sid, body, created, removed, rkind, rid in rows:
            try:
                text: str | None = self.keys.decrypt(
                    practice_id, body, message_aad(practice_id, conversation_id, seq)
                )
            except CorruptCiphertext:
                log.error(
                    "message %s of conversation %s failed authentication", mid, conversation_id
                )
                text = None
            out.append(
                ExportedMessage(
                    seq,
                    party(kind, sid),
                    text,
                    _naive_utc(created),
                    _naive_utc(removed) if removed is not None else None,
                    party(rkind, rid) if rkind is not None and rid is not None else None,
                )
            )
        return out

    def list_scope_client_ids(
        self,
        practice_id: PracticeId,
        *,
        clinician_id: MemberId | None,
        after_id: int,
        limit: int,
    ) -> list[ClientId]:
        """EX2/EX6: the clients in scope (every client of the practice, active or not,
        or those whose primary clinician is `clinician_id`), by id, a page at a time."""
        stmt = select(ClientRow.id).where(
            ClientRow.practice_id == practice_id, ClientRow.id > after_id
        )
        if clinician_id is not None:
            stmt = stmt.where(ClientRow.primary_clinician_id == clinician_id)
        return [
            ClientId(i)
            for i in self.conn.execute(stmt.order_by(ClientRow.id).limit(limit)).scalars()
        ]

    def list_team_conversations(
        self,
        practice_id: PracticeId,
        *,
        member_id: MemberId | None,
        after_id: int,
        limit: int,
    ) -> list[TeamConversation]:
        """Team-only conversations (no client) by id, a page at a time: all of the
        practice's, or those `member_id` takes part in (EX6)."""
        stmt = select(ConversationRow.id, ConversationRow.last_seq).where(
            ConversationRow.practice_id == practice_id,
            ConversationRow.client_id.is_(None),
            ConversationRow.id > after_id,
        )
        if member_id is not None:
            stmt = stmt.where(
                ConversationRow.id.in_(
                    select(ParticipantRow.conversation_id).where(
                        ParticipantRow.practice_id == practice_id,
                        ParticipantRow.party_kind == PartyKind.MEMBER.value,
                        ParticipantRow.party_id == member_id,
                    )
                )
            )
        rows = self.conn.execute(stmt.order_by(ConversationRow.id).limit(limit)).all()
        if not rows:
            return []
        members: dict[int, set[Party]] = {r.id: set() for r in rows}
        for cid, kind, pid in self.conn.execute(
            select(
                ParticipantRow.conversation_id, ParticipantRow.party_kind, ParticipantRow.party_id
            ).where(
                scope_only(ParticipantRow.practice_id) == practice_id,
                ParticipantRow.conversation_id.in_(list(members)),
            )
        ):
            members[cid].add(Party(PartyKind(kind), pid))
        return [
            TeamConversation(ConversationId(r.id), r.last_seq, frozenset(members[r.id]))
            for r in rows
        ]

    def count_scope_messages(
        self, practice_id: PracticeId, *, clinician_id: MemberId | None
    ) -> int:
        """How many messages the export will hold (for its progress): removed ones
        included."""
        count = select(func.count()).select_from(MessageRow)
        if clinician_id is None:
            stmt = count.where(MessageRow.practice_id == practice_id)
        else:
            their_clients = select(ClientRow.id).where(
                ClientRow.practice_id == practice_id,
                ClientRow.primary_clinician_id == clinician_id,
            )
            in_scope = select(ConversationRow.id).where(
                ConversationRow.practice_id == practice_id,
                or_(
                    ConversationRow.client_id.in_(their_clients),
                    and_(
                        ConversationRow.client_id.is_(None),
                        ConversationRow.id.in_(
                            select(ParticipantRow.conversation_id).where(
                                ParticipantRow.practice_id == practice_id,
                                ParticipantRow.party_kind == PartyKind.MEMBER.value,
                                ParticipantRow.party_id == clinician_id,
                            )
                        ),
                    ),
                ),
            )
            # By conversation, not by walking every message of the practice.
            stmt = count.where(
                scope_only(MessageRow.practice_id) == practice_id,
                MessageRow.conversation_id.in_(in_scope),
            )
        return int(self.conn.execute(stmt).scalar_one())


class ExportQueue:
    """Across practices: the claimer and the sweeper (jobs/exports.py) only."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def claim_next(
        self, *, lease: timedelta, only: int | None = None
    ) -> tuple[PracticeId, int] | None:
        """Take the oldest queued export, or a generating one whose lease ran out (its
        worker died): it becomes `generating`, with a new lease and one more attempt.
        A lapsed run that already used every attempt is failed (`interrupted`).
        `only`: that export or nothing (tests and the `confide export` command)."""
        now = utcnow()
        while True:
            stmt = select(DataExportRow.id, DataExportRow.practice_id, DataExportRow.attempts)
            if only is not None:
                stmt = stmt.where(DataExportRow.id == only)
            row = self.conn.execute(
                stmt.where(
                    or_(
                        DataExportRow.status == ExportStatus.QUEUED.value,
                        and_(
                            DataExportRow.status == ExportStatus.GENERATING.value,
                            DataExportRow.claimed_until < now,
                        ),
                    )
                )
                .order_by(DataExportRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return None
            where = (DataExportRow.id == row.id,)
            if row.attempts >= MAX_ATTEMPTS:
                self.conn.execute(
                    update(DataExportRow)
                    .where(*where)
                    .values(
                        status=ExportStatus.FAILED.value,
                        error="interrupted",
                        finished_at=now,
                        claimed_until=None,
                        password=None,
                    )
                )
                continue
            self.conn.execute(
                update(DataExportRow)
                .where(*where)
                .values(
                    status=ExportStatus.GENERATING.value,
                    attempts=row.attempts + 1,
                    claimed_until=now + lease,
                    started_at=now,
                    progress=0,
                )
            )
            return PracticeId(row.practice_id), int(row.id)

    def list_expired(self, *, limit: int) -> Sequence[tuple[PracticeId, int]]:
        """Ready exports whose download window has closed."""
        rows = self.conn.execute(
            select(DataExportRow.practice_id, DataExportRow.id)
            .where(
                DataExportRow.status == ExportStatus.READY.value,
                DataExportRow.expires_at <= utcnow(),
            )
            .order_by(DataExportRow.id)
            .limit(limit)
        )
        return [(PracticeId(p), int(i)) for p, i in rows]
