"""Sign-in state (issue 5): practice security settings, TOTP secrets (encrypted with
the practice's data key), recovery code hashes, the pending second step, and failed
attempts for rate limits and lockout. Only hashes of bearer secrets are stored (PA7)."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from confide.domain.ids import MemberId, PracticeId
from confide.domain.signin import SecuritySettings
from confide.store.clock import aware, utcnow
from confide.store.crypto import KeyRing
from confide.store.repos.practices import ensure_data_key
from confide.store.tables import (
    MemberTotpRow,
    PracticeSecurityRow,
    RecoveryCodeRow,
    SigninChallengeRow,
    SigninFailureRow,
)


def totp_aad(practice_id: int, member_id: int) -> bytes:
    """A TOTP secret is bound to its member: copied to another row, it fails to open."""
    return f"confide:totp:{practice_id}:{member_id}".encode()


# Every authenticated request asks PA4's two questions: built once.
_SECOND_FACTOR_REQUIRED = select(PracticeSecurityRow.require_second_factor).where(
    PracticeSecurityRow.practice_id == bindparam("pid")
)
_HAS_SECOND_FACTOR = select(MemberTotpRow.member_id).where(
    MemberTotpRow.practice_id == bindparam("pid"),
    MemberTotpRow.member_id == bindparam("mid"),
    MemberTotpRow.confirmed_at.is_not(None),
)


@dataclass(frozen=True, slots=True)
class StoredTotp:
    secret: str
    confirmed: bool
    last_step: int | None


@dataclass(frozen=True, slots=True)
class StoredChallenge:
    practice_id: PracticeId
    member_id: MemberId
    via: str
    expires_at: datetime
    attempts: int
    used: bool


class SigninRepo:
    def __init__(self, conn: Connection, keys: KeyRing) -> None:
        self.conn = conn
        self.keys = keys
        # Read once per unit of work (see PeopleRepo): PA4's switch, asked at every
        # request of an API token.
        self._second_factor_required: dict[int, bool] = {}

    def forget(self) -> None:
        self._second_factor_required.clear()

    # -- practice security settings ------------------------------------------------------

    def get_security_settings(self, practice_id: PracticeId) -> SecuritySettings:
        row = self.conn.execute(
            select(PracticeSecurityRow.__table__).where(
                PracticeSecurityRow.practice_id == practice_id
            )
        ).one_or_none()
        if row is None:
            return SecuritySettings()
        return SecuritySettings(
            require_second_factor=row.require_second_factor,
            session_idle_minutes=row.session_idle_minutes,
            members_may_use_oidc=row.members_may_use_oidc,
        )

    def put_security_settings(self, practice_id: PracticeId, settings: SecuritySettings) -> None:
        values = dict(
            require_second_factor=settings.require_second_factor,
            session_idle_minutes=settings.session_idle_minutes,
            members_may_use_oidc=settings.members_may_use_oidc,
            updated_at=utcnow(),
        )
        self._second_factor_required.pop(practice_id, None)
        done = self.conn.execute(
            update(PracticeSecurityRow)
            .where(PracticeSecurityRow.practice_id == practice_id)
            .values(**values)
        )
        if not done.rowcount:
            self.conn.execute(insert(PracticeSecurityRow).values(practice_id=practice_id, **values))

    def must_enroll(self, practice_id: PracticeId, member_id: MemberId) -> bool:
        """PA4: the practice requires a second factor and this member has none yet."""
        required = self._second_factor_required.get(practice_id)
        if required is None:
            required = self._second_factor_required[practice_id] = bool(
                self.conn.execute(_SECOND_FACTOR_REQUIRED, {"pid": practice_id}).scalar()
            )
        if not required:
            return False
        return not self.has_second_factor(practice_id, member_id)

    # -- TOTP ---------------------------------------------------------------------------

    def has_second_factor(self, practice_id: PracticeId, member_id: MemberId) -> bool:
        found = self.conn.execute(_HAS_SECOND_FACTOR, {"pid": practice_id, "mid": member_id})
        return found.first() is not None

    def list_members_with_second_factor(self, practice_id: PracticeId) -> set[MemberId]:
        rows = self.conn.execute(
            select(MemberTotpRow.member_id).where(
                MemberTotpRow.practice_id == practice_id,
                MemberTotpRow.confirmed_at.is_not(None),
            )
        ).scalars()
        return {MemberId(m) for m in rows}

    def find_totp(
        self, practice_id: PracticeId, member_id: MemberId, *, for_update: bool = False
    ) -> StoredTotp | None:
        stmt = select(MemberTotpRow.__table__).where(
            MemberTotpRow.practice_id == practice_id, MemberTotpRow.member_id == member_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        row = self.conn.execute(stmt).one_or_none()
        if row is None:
            return None
        ensure_data_key(self.conn, self.keys, practice_id)
        secret = self.keys.decrypt(practice_id, row.secret, totp_aad(practice_id, member_id))
        return StoredTotp(secret, row.confirmed_at is not None, row.last_step)

    def start_totp(self, practice_id: PracticeId, member_id: MemberId, secret: str) -> None:
        """A new, unconfirmed secret (replacing an earlier unconfirmed one)."""
        ensure_data_key(self.conn, self.keys, practice_id)
        body = self.keys.encrypt(practice_id, secret, totp_aad(practice_id, member_id))
        self.delete_totp(practice_id, member_id)
        self.conn.execute(
            insert(MemberTotpRow).values(
                member_id=member_id,
                practice_id=practice_id,
                secret=body,
                created_at=utcnow(),
                confirmed_at=None,
                last_step=None,
            )
        )

    def confirm_totp(self, practice_id: PracticeId, member_id: MemberId) -> None:
        self.conn.execute(
            update(MemberTotpRow)
            .where(MemberTotpRow.practice_id == practice_id, MemberTotpRow.member_id == member_id)
            .values(confirmed_at=utcnow())
        )

    def use_totp_step(self, practice_id: PracticeId, member_id: MemberId, step: int) -> bool:
        """Move `last_step` forward to `step`; False when that step (or a later one) was
        already used: a code is accepted once, even by two concurrent requests."""
        result = self.conn.execute(
            update(MemberTotpRow)
            .where(
                MemberTotpRow.practice_id == practice_id,
                MemberTotpRow.member_id == member_id,
                (MemberTotpRow.last_step.is_(None)) | (MemberTotpRow.last_step < step),
            )
            .values(last_step=step)
        )
        return bool(result.rowcount)

    def delete_totp(self, practice_id: PracticeId, member_id: MemberId) -> None:
        self.conn.execute(
            delete(MemberTotpRow).where(
                MemberTotpRow.practice_id == practice_id, MemberTotpRow.member_id == member_id
            )
        )

    # -- recovery codes -----------------------------------------------------------------

    def replace_recovery_codes(
        self, practice_id: PracticeId, member_id: MemberId, hashes: list[str]
    ) -> None:
        self.delete_recovery_codes(practice_id, member_id)
        now = utcnow()
        self.conn.execute(
            insert(RecoveryCodeRow),
            [
                dict(practice_id=practice_id, member_id=member_id, code_hash=h, created_at=now)
                for h in hashes
            ],
        )

    def delete_recovery_codes(self, practice_id: PracticeId, member_id: MemberId) -> None:
        self.conn.execute(
            delete(RecoveryCodeRow).where(
                RecoveryCodeRow.practice_id == practice_id, RecoveryCodeRow.member_id == member_id
            )
        )

    def use_recovery_code(
        self, practice_id: PracticeId, member_id: MemberId, code_hash: str
    ) -> bool:
        """Spend one unused code; False if it is unknown or spent (single use, atomic)."""
        result = self.conn.execute(
            update(RecoveryCodeRow)
            .where(
                RecoveryCodeRow.practice_id == practice_id,
                RecoveryCodeRow.member_id == member_id,
                RecoveryCodeRow.code_hash == code_hash,
                RecoveryCodeRow.used_at.is_(None),
            )
            .values(used_at=utcnow())
        )
        return bool(result.rowcount)

    def count_recovery_codes(self, practice_id: PracticeId, member_id: MemberId) -> int:
        return int(
            self.conn.execute(
                select(func.count()).where(
                    RecoveryCodeRow.practice_id == practice_id,
                    RecoveryCodeRow.member_id == member_id,
                    RecoveryCodeRow.used_at.is_(None),
                )
            ).scalar_one()
        )

    # -- the pending second step ----------------------------------------------------------

    def insert_challenge(
        self,
        practice_id: PracticeId,
        member_id: MemberId,
        id_hash: str,
        *,
        via: str,
        expires_at: datetime,
    ) -> None:
        self.conn.execute(
            insert(SigninChallengeRow).values(
                id_hash=id_hash,
                practice_id=practice_id,
                member_id=member_id,
                via=via,
                created_at=utcnow(),
                expires_at=expires_at,
                attempts=0,
            )
        )

    def find_challenge(self, id_hash: str) -> StoredChallenge | None:
        row = self.conn.execute(
            select(SigninChallengeRow.__table__)
            .where(SigninChallengeRow.id_hash == id_hash)
            .with_for_update()
        ).one_or_none()
        if row is None:
            return None
        return StoredChallenge(
            PracticeId(row.practice_id),
            MemberId(row.member_id),
            row.via,
            aware(row.expires_at),
            row.attempts,
            row.used_at is not None,
        )

    def count_challenge_attempt(self, id_hash: str) -> None:
        self.conn.execute(
            update(SigninChallengeRow)
            .where(SigninChallengeRow.id_hash == id_hash)
            .values(attempts=SigninChallengeRow.attempts + 1)
        )

    def use_challenge(self, id_hash: str) -> bool:
        result = self.conn.execute(
            update(SigninChallengeRow)
            .where(SigninChallengeRow.id_hash == id_hash, SigninChallengeRow.used_at.is_(None))
            .values(used_at=utcnow())
        )
        return bool(result.rowcount)

    # -- failed attempts (rate limits, lockout) -------------------------------------------

    def record_failure(self, key: str, at: datetime) -> None:
        self.conn.execute(insert(SigninFailureRow).values(key=key, at=at))

    def list_failures(self, key: str, since: datetime) -> list[datetime]:
        return [
            aware(t)
            for t in self.conn.execute(
                select(SigninFailureRow.at)
                .where(SigninFailureRow.key == key, SigninFailureRow.at > since)
                .order_by(SigninFailureRow.at)
            ).scalars()
        ]

    def clear_failures(self, key: str) -> None:
        self.conn.execute(delete(SigninFailureRow).where(SigninFailureRow.key == key))

    def prune_failures(self, before: datetime) -> int:
        return self.conn.execute(
            delete(SigninFailureRow).where(SigninFailureRow.at < before)
        ).rowcount
