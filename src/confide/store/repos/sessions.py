"""Server-side sessions and personal API tokens; only SHA-256 hashes are stored (PA7)."""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, literal_column, select, update

from confide.domain.actors import Party, PartyKind, Via
from confide.domain.entities import Member
from confide.domain.ids import MemberId, PracticeId
from confide.store.clock import aware, utcnow
from confide.store.hot import HotStatement
from confide.store.repos.people import member_from_row
from confide.store.tables import (
    ApiTokenRow,
    MemberRow,
    MemberTotpRow,
    PracticeSecurityRow,
    SessionRow,
)

# A token with its holder's row and whether they must enroll a second factor first
# (PA4): one query instead of three for every request made with a token.
_FIND_TOKEN = HotStatement(
    select(
        MemberRow.__table__,
        PracticeSecurityRow.require_second_factor,
        MemberTotpRow.confirmed_at.label("totp_confirmed_at"),
    )
    .select_from(ApiTokenRow)
    .join(
        MemberRow,
        (MemberRow.practice_id == ApiTokenRow.practice_id)
        & (MemberRow.id == ApiTokenRow.member_id),
    )
    .outerjoin(PracticeSecurityRow, PracticeSecurityRow.practice_id == ApiTokenRow.practice_id)
    .outerjoin(MemberTotpRow, MemberTotpRow.member_id == ApiTokenRow.member_id)
    .where(ApiTokenRow.token_hash == bindparam("hash"), ApiTokenRow.revoked_at.is_(None))
)
# With the practice's idle limit (PA5) and whether a member must enroll a second factor
# first (PA4): one query answers every request's session check.
_SESSION_COLUMNS = (
    select(
        SessionRow.__table__,
        PracticeSecurityRow.session_idle_minutes,
        PracticeSecurityRow.require_second_factor,
        MemberTotpRow.confirmed_at.label("totp_confirmed_at"),
    )
    .outerjoin(PracticeSecurityRow, PracticeSecurityRow.practice_id == SessionRow.practice_id)
    .outerjoin(
        MemberTotpRow,
        # A constant, not a bound parameter: the statement stays one shape for the cache.
        (SessionRow.party_kind == literal_column("'member'"))
        & (MemberTotpRow.member_id == SessionRow.party_id),
    )
)
_FIND_SESSION = _SESSION_COLUMNS.where(
    SessionRow.id_hash == bindparam("hash"), SessionRow.ended_at.is_(None)
)
_FIND_SESSIONS = _SESSION_COLUMNS.where(
    SessionRow.id_hash.in_(bindparam("hashes", expanding=True)), SessionRow.ended_at.is_(None)
)
IN_CHUNK = 500  # hashes per IN list: far below every driver's parameter limit


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A live API token's holder (active or not: the caller decides)."""

    member: Member
    must_enroll: bool  # PA4: the practice requires a second factor and they have none


@dataclass(frozen=True, slots=True)
class StoredSession:
    practice_id: PracticeId
    party: Party
    via: Via
    created_at: datetime
    last_seen_at: datetime
    idle_minutes: int | None = None  # the practice's setting; None: the default
    must_enroll: bool = False  # PA4: a member who must enroll a second factor first


_KINDS = {k.value: k for k in PartyKind}  # a dict lookup: Enum(value) costs microseconds,
_VIAS = {v.value: v for v in Via}  # and the hub turns 10,000 rows a second into sessions


def _stored(row: Any) -> StoredSession:
    return StoredSession(
        PracticeId(row.practice_id),
        Party(_KINDS[row.party_kind], row.party_id),
        _VIAS[row.via],
        aware(row.created_at),
        aware(row.last_seen_at),
        row.session_idle_minutes,
        bool(
            row.require_second_factor
            and row.party_kind == "member"
            and row.totp_confirmed_at is None
        ),
    )


class SessionRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_session(self, practice_id: PracticeId, party: Party, via: Via, id_hash: str) -> None:
        now = utcnow()
        self.conn.execute(
            insert(SessionRow).values(
                id_hash=id_hash,
                practice_id=practice_id,
                party_kind=party.kind.value,
                party_id=party.id,
                via=via.value,
                created_at=now,
                last_seen_at=now,
            )
        )

    def find_live_session(self, id_hash: str) -> StoredSession | None:
        row = self.conn.execute(_FIND_SESSION, {"hash": id_hash}).one_or_none()
        return None if row is None else _stored(row)

    def find_live_sessions(self, id_hashes: Collection[str]) -> dict[str, StoredSession]:
        """The live sessions among `id_hashes`, by hash (absent: unknown or ended); one
        query per IN_CHUNK hashes, for the hub's periodic check of all its sockets."""
        hashes = sorted(set(id_hashes))
        found: dict[str, StoredSession] = {}
        for i in range(0, len(hashes), IN_CHUNK):
            chunk = hashes[i : i + IN_CHUNK]
            for row in self.conn.execute(_FIND_SESSIONS, {"hashes": chunk}):
                found[row.id_hash] = _stored(row)
        return found

    def touch_session(self, id_hash: str, at: datetime) -> None:
        self.conn.execute(
            update(SessionRow).where(SessionRow.id_hash == id_hash).values(last_seen_at=at)
        )

    def end_session(self, id_hash: str) -> bool:
        result = self.conn.execute(
            update(SessionRow)
            .where(SessionRow.id_hash == id_hash, SessionRow.ended_at.is_(None))
            .values(ended_at=utcnow())
        )
        return bool(result.rowcount)

    def end_sessions_of(self, practice_id: PracticeId, party: Party) -> int:
        result = self.conn.execute(
            update(SessionRow)
            .where(
                SessionRow.practice_id == practice_id,
                SessionRow.party_kind == party.kind.value,
                SessionRow.party_id == party.id,
                SessionRow.ended_at.is_(None),
            )
            .values(ended_at=utcnow())
        )
        return result.rowcount

    # -- API tokens --------------------------------------------------------------------

    def insert_api_token(
        self, practice_id: PracticeId, member_id: MemberId, name: str, token_hash: str
    ) -> int:
        return int(
            self.conn.execute(
                insert(ApiTokenRow)
                .values(
                    practice_id=practice_id,
                    member_id=member_id,
                    name=name,
                    token_hash=token_hash,
                    created_at=utcnow(),
                )
                .returning(ApiTokenRow.id)
            ).scalar_one()
        )

    def find_api_token(self, token_hash: str) -> StoredToken | None:
        row = _FIND_TOKEN.one_or_none(self.conn, {"hash": token_hash})
        if row is None:
            return None
        must_enroll = bool(row.require_second_factor and row.totp_confirmed_at is None)
        return StoredToken(member_from_row(row), must_enroll)

    def revoke_api_tokens_of(self, practice_id: PracticeId, member_id: MemberId) -> int:
        result = self.conn.execute(
            update(ApiTokenRow)
            .where(
                ApiTokenRow.practice_id == practice_id,
                ApiTokenRow.member_id == member_id,
                ApiTokenRow.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return result.rowcount

    def revoke_api_token(self, practice_id: PracticeId, member_id: MemberId, token_id: int) -> bool:
        result = self.conn.execute(
            update(ApiTokenRow)
            .where(
                ApiTokenRow.practice_id == practice_id,
                ApiTokenRow.member_id == member_id,
                ApiTokenRow.id == token_id,
                ApiTokenRow.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return bool(result.rowcount)
