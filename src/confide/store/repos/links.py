"""Email links, link sessions and link requests (services/links.py has the rules).

Only SHA-256 hashes of link tokens and session ids are stored (PA7). Redemption is one
conditional UPDATE … RETURNING, so of many concurrent redemptions of a single-use link
exactly one wins.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from confide.domain.actors import Party, PartyKind
from confide.domain.ids import PracticeId
from confide.store.clock import aware, aware_or_none, utcnow
from confide.store.tables import (
    ClientRow,
    ContactRow,
    LinkSessionRow,
    LinkTokenRow,
    MemberRow,
    SignInRequestRow,
)


@dataclass(frozen=True, slots=True)
class StoredLink:
    id: int
    practice_id: PracticeId
    purpose: str
    party: Party
    conversation_id: int | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


def _link(row: Any) -> StoredLink:
    return StoredLink(
        id=row.id,
        practice_id=PracticeId(row.practice_id),
        purpose=row.purpose,
        party=Party(PartyKind(row.party_kind), row.party_id),
        conversation_id=row.conversation_id,
        created_at=aware(row.created_at),
        expires_at=aware(row.expires_at),
        used_at=aware_or_none(row.used_at),
        revoked_at=aware_or_none(row.revoked_at),
    )


@dataclass(frozen=True, slots=True)
class LinkScope:
    practice_id: PracticeId
    link_id: int
    conversation_id: int
    expires_at: datetime


class LinkRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_link(
        self,
        practice_id: PracticeId,
        *,
        purpose: str,
        token_hash: str,
        party: Party,
        expires_at: datetime,
        conversation_id: int | None = None,
    ) -> int:
        return int(
            self.conn.execute(
                insert(LinkTokenRow)
                .values(
                    practice_id=practice_id,
                    purpose=purpose,
                    token_hash=token_hash,
                    party_kind=party.kind.value,
                    party_id=party.id,
                    conversation_id=conversation_id,
                    created_at=utcnow(),
                    expires_at=expires_at,
                )
                .returning(LinkTokenRow.id)
            ).scalar_one()
        )

    def lock_party(self, practice_id: PracticeId, party: Party) -> None:
        """Serialize link issuing for one person (PostgreSQL row lock until commit; on
        SQLite the write transaction already does): "only the newest works" and the
        per-person limit hold under concurrent jobs."""
        table: Any = {
            PartyKind.CLIENT: ClientRow,
            PartyKind.CONTACT: ContactRow,
            PartyKind.MEMBER: MemberRow,
        }[party.kind]
        self.conn.execute(
            select(table.id)
            .where(table.practice_id == practice_id, table.id == party.id)
            .with_for_update()
        )

    def revoke_links_of(self, practice_id: PracticeId, party: Party, purpose: str) -> int:
        """Only the newest works: revoke the party's open links of a purpose."""
        result = self.conn.execute(
            update(LinkTokenRow)
            .where(
                LinkTokenRow.practice_id == practice_id,
                LinkTokenRow.party_kind == party.kind.value,
                LinkTokenRow.party_id == party.id,
                LinkTokenRow.purpose == purpose,
                LinkTokenRow.used_at.is_(None),
                LinkTokenRow.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return result.rowcount

    def count_links_since(
        self, practice_id: PracticeId, party: Party, purpose: str, since: datetime
    ) -> int:
        return int(
            self.conn.execute(
                select(func.count())
                .select_from(LinkTokenRow)
                .where(
                    LinkTokenRow.practice_id == practice_id,
                    LinkTokenRow.party_kind == party.kind.value,
                    LinkTokenRow.party_id == party.id,
                    LinkTokenRow.purpose == purpose,
                    LinkTokenRow.created_at >= since,
                )
            ).scalar_one()
        )

    def find_link(self, token_hash: str, purpose: str) -> StoredLink | None:
        """A link by its hash and purpose (a token of another purpose is not found)."""
        row = self.conn.execute(
            select(LinkTokenRow.__table__).where(
                LinkTokenRow.token_hash == token_hash, LinkTokenRow.purpose == purpose
            )
        ).one_or_none()
        return None if row is None else _link(row)

    def use_link(
        self, token_hash: str, purpose: str, *, now: datetime, single_use: bool
    ) -> StoredLink | None:
        """Redeem: one conditional UPDATE … RETURNING. A single-use link is marked used
        by exactly one caller; a reusable link (PA1) records its first use."""
        conditions = [
            LinkTokenRow.token_hash == token_hash,
            LinkTokenRow.purpose == purpose,
            LinkTokenRow.revoked_at.is_(None),
            LinkTokenRow.expires_at > now,
        ]
        if single_use:
            conditions.append(LinkTokenRow.used_at.is_(None))
            values: dict[str, Any] = {"used_at": now}
        else:
            values = {"used_at": func.coalesce(LinkTokenRow.used_at, now)}
        row = self.conn.execute(
            update(LinkTokenRow)
            .where(*conditions)
            .values(**values)
            .returning(*LinkTokenRow.__table__.columns)
        ).one_or_none()
        return None if row is None else _link(row)

    # -- link sessions (PA1, PA6) --------------------------------------------------------

    def insert_link_session(
        self,
        practice_id: PracticeId,
        *,
        session_hash: str,
        link_id: int,
        conversation_id: int,
        expires_at: datetime,
    ) -> None:
        self.conn.execute(
            insert(LinkSessionRow).values(
                session_hash=session_hash,
                practice_id=practice_id,
                link_id=link_id,
                conversation_id=conversation_id,
                expires_at=expires_at,
            )
        )

    def find_link_session(self, session_hash: str) -> LinkScope | None:
        """The scope of a session started from a portal link (None for other sessions);
        a revoked link ends its sessions too."""
        row = self.conn.execute(
            select(
                LinkSessionRow.practice_id,
                LinkSessionRow.link_id,
                LinkSessionRow.conversation_id,
                LinkSessionRow.expires_at,
                LinkTokenRow.revoked_at,
            )
            .join(LinkTokenRow, LinkTokenRow.id == LinkSessionRow.link_id)
            .where(LinkSessionRow.session_hash == session_hash)
        ).one_or_none()
        if row is None:
            return None
        expires = aware(row.expires_at)
        if row.revoked_at is not None:
            expires = min(expires, aware(row.revoked_at))
        return LinkScope(PracticeId(row.practice_id), row.link_id, row.conversation_id, expires)

    # -- who an address belongs to, and request counts (PA2, password reset) ----------

    def insert_request(self, purpose: str, *, email_hash: str, ip_hash: str) -> None:
        self.conn.execute(
            insert(SignInRequestRow).values(
                purpose=purpose, email_hash=email_hash, ip_hash=ip_hash, created_at=utcnow()
            )
        )

    def prune_requests(self, before: datetime) -> int:
        """Forget link requests older than `before` (they only feed the rate limits)."""
        result = self.conn.execute(
            delete(SignInRequestRow).where(SignInRequestRow.created_at < before)
        )
        return result.rowcount

    def count_requests_since(
        self, *, since: datetime, ip_hash: str | None = None, email_hash: str | None = None
    ) -> int:
        stmt = (
            select(func.count())
            .select_from(SignInRequestRow)
            .where(SignInRequestRow.created_at >= since)
        )
        if ip_hash is not None:
            stmt = stmt.where(SignInRequestRow.ip_hash == ip_hash)
        if email_hash is not None:
            stmt = stmt.where(SignInRequestRow.email_hash == email_hash)
        return int(self.conn.execute(stmt).scalar_one())
