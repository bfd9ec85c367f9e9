from sqlalchemy import Connection, bindparam, insert, select, update

from confide.domain.entities import Plan, Practice
from confide.domain.errors import NotFound
from confide.domain.ids import PracticeId
from confide.store.clock import utcnow
from confide.store.crypto import KeyRing
from confide.store.hot import HotStatement
from confide.store.tables import PracticeKeyRow, PracticeRow

# Hot-path statements are built once (building one costs more than running it).
_SELECT = select(PracticeRow.__table__).where(PracticeRow.id == bindparam("pid"))
_GET = HotStatement(_SELECT)  # every request that checks a plan or a switch
_GET_FOR_UPDATE = HotStatement(_SELECT.with_for_update())


def ensure_data_key(conn: Connection, keys: KeyRing, practice_id: int) -> None:
    """Unwrap the practice's data key into the key ring once per process (RC2)."""
    if not keys.has(practice_id):
        wrapped = conn.execute(
            select(PracticeKeyRow.wrapped_key).where(PracticeKeyRow.practice_id == practice_id)
        ).scalar_one()
        keys.install(practice_id, wrapped)


class PracticeRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # Read once per unit of work (see PeopleRepo): every request of a group commit
        # checks the same practice's switches.
        self._practices: dict[int, Practice] = {}

    def forget(self) -> None:
        self._practices.clear()

    def insert_practice(self, name: str, plan: Plan) -> PracticeId:
        now = utcnow()
        pid = self.conn.execute(
            insert(PracticeRow)
            .values(
                name=name,
                plan=plan.value,
                team_messaging=False,
                client_messaging=False,
                auto_allow_new_clients=False,
                created_at=now,
            )
            .returning(PracticeRow.id)
        ).scalar_one()
        return PracticeId(pid)

    def get_practice(self, practice_id: PracticeId, *, for_update: bool = False) -> Practice:
        if not for_update and (known := self._practices.get(practice_id)) is not None:
            return known
        stmt = _GET_FOR_UPDATE if for_update else _GET
        row = stmt.one_or_none(self.conn, {"pid": practice_id})
        if row is None:
            raise NotFound("practice")
        practice = self._practices[practice_id] = Practice(
            id=PracticeId(row.id),
            name=row.name,
            plan=Plan(row.plan),
            team_messaging=row.team_messaging,
            client_messaging=row.client_messaging,
            auto_allow_new_clients=row.auto_allow_new_clients,
        )
        return practice

    def update_practice(self, practice_id: PracticeId, **values: object) -> None:
        self._practices.pop(practice_id, None)
        self.conn.execute(update(PracticeRow).where(PracticeRow.id == practice_id).values(**values))

    def insert_data_key(self, practice_id: PracticeId, wrapped: bytes) -> None:
        self.conn.execute(
            insert(PracticeKeyRow).values(
                practice_id=practice_id, wrapped_key=wrapped, created_at=utcnow()
            )
        )

    def find_data_key(self, practice_id: PracticeId) -> bytes | None:
        return self.conn.execute(
            select(PracticeKeyRow.wrapped_key).where(PracticeKeyRow.practice_id == practice_id)
        ).scalar_one_or_none()

    def list_practice_ids(self) -> list[PracticeId]:
        return [PracticeId(i) for i in self.conn.execute(select(PracticeRow.id)).scalars()]
