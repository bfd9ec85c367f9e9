"""Announcements (AN1): the text encrypted at rest (RC2), bound to its row like a chart
note; the recipients fixed when it is sent."""

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from confide.domain.announcements import Announcement, Audience
from confide.domain.ids import ClientId, MemberId, PracticeId
from confide.store.clock import aware, utcnow
from confide.store.crypto import CorruptCiphertext, KeyRing
from confide.store.repos.practices import ensure_data_key
from confide.store.tables import AnnouncementRecipientRow, AnnouncementRow, ClientRow

log = logging.getLogger("confide.store")


def announcement_aad(practice_id: int, announcement_id: int) -> bytes:
    return f"confide:announcement:{practice_id}:{announcement_id}".encode()


class AnnouncementRepo:
    def __init__(self, conn: Connection, keys: KeyRing) -> None:
        self.conn = conn
        self.keys = keys

    def list_audience(
        self, practice_id: PracticeId, *, primary_clinician_id: MemberId | None
    ) -> list[tuple[ClientId, bool]]:
        """The active clients of the audience (all, or one clinician's as primary), each
        with whether an email alert can reach them (portal access and an address)."""
        stmt = select(ClientRow.id, ClientRow.portal_access, ClientRow.email).where(
            ClientRow.practice_id == practice_id, ClientRow.active.is_(True)
        )
        if primary_clinician_id is not None:
            stmt = stmt.where(ClientRow.primary_clinician_id == primary_clinician_id)
        return [
            (ClientId(i), bool(portal and email))
            for i, portal, email in self.conn.execute(stmt.order_by(ClientRow.id))
        ]

    def insert_announcement(
        self,
        practice_id: PracticeId,
        *,
        author_id: MemberId,
        audience: Audience,
        text: str,
        client_ids: Sequence[ClientId],
    ) -> Announcement:
        """Store the announcement and its recipients, in the caller's transaction."""
        now = utcnow()
        aid = self.conn.execute(
            insert(AnnouncementRow)
            .values(
                practice_id=practice_id,
                author_id=author_id,
                audience=audience.value,
                recipients=len(client_ids),
                body=b"",  # replaced below, before anyone else can see the row
                created_at=now,
            )
            .returning(AnnouncementRow.id)
        ).scalar_one()
        ensure_data_key(self.conn, self.keys, practice_id)
        body = self.keys.encrypt(practice_id, text, announcement_aad(practice_id, aid))
        self.conn.execute(
            update(AnnouncementRow)
            .where(AnnouncementRow.practice_id == practice_id, AnnouncementRow.id == aid)
            .values(body=body)
        )
        if client_ids:
            self.conn.execute(
                insert(AnnouncementRecipientRow),
                [
                    {"practice_id": practice_id, "announcement_id": aid, "client_id": c}
                    for c in client_ids
                ],
            )
        return Announcement(int(aid), practice_id, author_id, audience, len(client_ids), text, now)

    def list_for_client(
        self, practice_id: PracticeId, client_id: ClientId, *, before_id: int | None, limit: int
    ) -> list[Announcement]:
        """The announcements the client received, newest first."""
        received = select(AnnouncementRecipientRow.announcement_id).where(
            AnnouncementRecipientRow.practice_id == practice_id,
            AnnouncementRecipientRow.client_id == client_id,
        )
        stmt = select(AnnouncementRow.__table__).where(
            AnnouncementRow.practice_id == practice_id, AnnouncementRow.id.in_(received)
        )
        return self._page(stmt, before_id, limit)

    def is_recipient(
        self, practice_id: PracticeId, announcement_id: int, client_id: ClientId
    ) -> bool:
        """Whether the announcement went to this client (fixed when it was sent)."""
        found = self.conn.execute(
            select(AnnouncementRecipientRow.client_id).where(
                AnnouncementRecipientRow.practice_id == practice_id,
                AnnouncementRecipientRow.announcement_id == announcement_id,
                AnnouncementRecipientRow.client_id == client_id,
            )
        ).first()
        return found is not None

    def list_sent(
        self,
        practice_id: PracticeId,
        *,
        author_id: MemberId | None,
        before_id: int | None,
        limit: int,
    ) -> list[Announcement]:
        """The practice's announcements (or one author's), newest first."""
        stmt = select(AnnouncementRow.__table__).where(AnnouncementRow.practice_id == practice_id)
        if author_id is not None:
            stmt = stmt.where(AnnouncementRow.author_id == author_id)
        return self._page(stmt, before_id, limit)

    def _page(self, stmt: Any, before_id: int | None, limit: int) -> list[Announcement]:
        if before_id is not None:
            stmt = stmt.where(AnnouncementRow.id < before_id)
        rows = self.conn.execute(stmt.order_by(AnnouncementRow.id.desc()).limit(limit))
        return [self._announcement(r) for r in rows]

    def _announcement(self, row: Row[Any]) -> Announcement:
        ensure_data_key(self.conn, self.keys, row.practice_id)
        text: str | None
        try:
            text = self.keys.decrypt(
                row.practice_id, row.body, announcement_aad(row.practice_id, row.id)
            )
        except CorruptCiphertext:
            log.error("announcement %s failed authentication", row.id)
            text = None
        return Announcement(
            id=row.id,
            practice_id=PracticeId(row.practice_id),
            author_id=MemberId(row.author_id),
            audience=Audience(row.audience),
            recipients=row.recipients,
            text=text,
            created_at=aware(row.created_at),
        )
