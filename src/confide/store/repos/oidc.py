"""OIDC sign-in state (PA3): started attempts (only the hash of the browser's pre-auth
secret) and linked accounts by (issuer, subject)."""

from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from confide.domain.actors import Party, PartyKind
from confide.domain.ids import PracticeId
from confide.store.clock import utcnow
from confide.store.repos.people import PracticeParty
from confide.store.tables import OidcIdentityRow, OidcRequestRow

# An OIDC account's person: the practice and the party (people.find_client_side_by_email
# answers the same shape for the first sign-in's match by address).
Linked = PracticeParty


class OidcRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_request(self, id_hash: str, expires_at: datetime, link: Linked | None) -> None:
        self.conn.execute(
            insert(OidcRequestRow).values(
                id_hash=id_hash,
                created_at=utcnow(),
                expires_at=expires_at,
                link_practice_id=link.practice_id if link else None,
                link_party_kind=link.party.kind.value if link else None,
                link_party_id=link.party.id if link else None,
            )
        )

    def use_request(self, id_hash: str, now: datetime) -> tuple[bool, Linked | None]:
        """Spend a started attempt (once, before it expires): (found, link target)."""
        done = self.conn.execute(
            update(OidcRequestRow)
            .where(
                OidcRequestRow.id_hash == id_hash,
                OidcRequestRow.used_at.is_(None),
                OidcRequestRow.expires_at > now,
            )
            .values(used_at=now)
        )
        if not done.rowcount:
            return False, None
        row = self.conn.execute(
            select(
                OidcRequestRow.link_practice_id,
                OidcRequestRow.link_party_kind,
                OidcRequestRow.link_party_id,
            ).where(OidcRequestRow.id_hash == id_hash)
        ).one()
        if row.link_practice_id is None or row.link_party_kind is None:
            return True, None
        party = Party(PartyKind(row.link_party_kind), int(row.link_party_id))
        return True, Linked(PracticeId(row.link_practice_id), party)

    def find_identity(self, issuer: str, subject: str) -> Linked | None:
        row = self.conn.execute(
            select(
                OidcIdentityRow.practice_id, OidcIdentityRow.party_kind, OidcIdentityRow.party_id
            ).where(OidcIdentityRow.issuer == issuer, OidcIdentityRow.subject == subject)
        ).one_or_none()
        if row is None:
            return None
        return Linked(PracticeId(row.practice_id), Party(PartyKind(row.party_kind), row.party_id))

    def insert_identity(
        self, practice_id: PracticeId, party: Party, issuer: str, subject: str
    ) -> None:
        now = utcnow()
        self.conn.execute(
            insert(OidcIdentityRow).values(
                practice_id=practice_id,
                party_kind=party.kind.value,
                party_id=party.id,
                issuer=issuer,
                subject=subject,
                created_at=now,
                last_used_at=now,
            )
        )

    def touch_identity(self, practice_id: PracticeId, issuer: str, subject: str) -> None:
        self.conn.execute(
            update(OidcIdentityRow)
            .where(
                OidcIdentityRow.practice_id == practice_id,
                OidcIdentityRow.issuer == issuer,
                OidcIdentityRow.subject == subject,
            )
            .values(last_used_at=utcnow())
        )
