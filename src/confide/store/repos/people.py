"""Team members, clients, contacts, access grants and supervision links."""

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from confide.domain.actors import Party, PartyKind
from confide.domain.entities import (
    AccessLevel,
    Client,
    Contact,
    Member,
    MemberFacts,
    Role,
)
from confide.domain.errors import Conflict, NotFound
from confide.domain.ids import ClientId, ContactId, MemberId, PracticeId
from confide.domain.policy import sees_every_client
from confide.store.clock import utcnow
from confide.store.hot import HotStatement
from confide.store.repos import scope_only
from confide.store.tables import (
    ClientAccessGrantRow,
    ClientRow,
    ContactRow,
    MemberRow,
    SupervisionRow,
)


def member_from_row(row: Row[Any]) -> Member:
    return Member(
        id=MemberId(row.id),
        practice_id=PracticeId(row.practice_id),
        name=row.name,
        email=row.email,
        roles=frozenset(Role(r) for r in row.roles.split(",") if r),
        access_level=AccessLevel(row.access_level) if row.access_level else None,
        export_client_data=row.export_client_data,
        messaging_enabled=row.messaging_enabled,
        active=row.active,
        away_on=row.away_on,
        **({"away_text": row.away_text} if row.away_text else {}),
    )


def _client(row: Row[Any]) -> Client:
    return Client(
        id=ClientId(row.id),
        practice_id=PracticeId(row.practice_id),
        name=row.name,
        email=row.email,
        primary_clinician_id=MemberId(row.primary_clinician_id)
        if row.primary_clinician_id is not None
        else None,
        portal_access=row.portal_access,
        messaging_enabled=row.messaging_enabled,
        active=row.active,
    )


def _contact(row: Row[Any]) -> Contact:
    return Contact(
        id=ContactId(row.id),
        practice_id=PracticeId(row.practice_id),
        client_id=ClientId(row.client_id),
        name=row.name,
        email=row.email,
        relationship=row.relationship,
        portal_access=row.portal_access,
        messaging_enabled=row.messaging_enabled,
    )


def _like(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Hot-path statements are built once (building one costs more than running it).
# Up to this many members not yet in the identity map are read one by one on the
# cursor (~20 us each); more in one IN-list query (~200 us through SQLAlchemy).
FEW_BY_ID = 4
_GET_MEMBER = HotStatement(
    select(MemberRow.__table__).where(
        MemberRow.practice_id == bindparam("pid"), MemberRow.id == bindparam("id")
    )
)
_MEMBERS_IN = (
    select(MemberRow.__table__)
    .where(
        scope_only(MemberRow.practice_id) == bindparam("pid"),
        MemberRow.id.in_(bindparam("ids", expanding=True)),
    )
    .order_by(MemberRow.name)
)
_GET_CLIENT = HotStatement(
    select(ClientRow.__table__).where(
        ClientRow.practice_id == bindparam("pid"), ClientRow.id == bindparam("id")
    )
)
_GRANTS_OF = HotStatement(
    select(ClientAccessGrantRow.client_id).where(
        ClientAccessGrantRow.practice_id == bindparam("pid"),
        ClientAccessGrantRow.member_id == bindparam("mid"),
    )
)
_SUPERVISEES_OF = select(SupervisionRow.supervisee_id).where(
    SupervisionRow.practice_id == bindparam("pid"),
    SupervisionRow.supervisor_id == bindparam("mid"),
)
# The same for several members at once (`facts_for`), and clients by id (`load_clients`).
_GRANTS_OF_MANY = select(ClientAccessGrantRow.member_id, ClientAccessGrantRow.client_id).where(
    ClientAccessGrantRow.practice_id == bindparam("pid"),
    ClientAccessGrantRow.member_id.in_(bindparam("ids", expanding=True)),
)
_SUPERVISEES_OF_MANY = select(SupervisionRow.supervisor_id, SupervisionRow.supervisee_id).where(
    SupervisionRow.practice_id == bindparam("pid"),
    SupervisionRow.supervisor_id.in_(bindparam("ids", expanding=True)),
)
# A client's contacts, by the client's index (not every contact of the practice).
_CONTACTS_OF = (
    select(ContactRow.__table__)
    .where(scope_only(ContactRow.practice_id) == bindparam("pid"))
    .where(ContactRow.client_id == bindparam("cid"))
    .order_by(ContactRow.name)
)
_CLIENTS_IN = select(ClientRow.__table__).where(
    scope_only(ClientRow.practice_id) == bindparam("pid"),
    ClientRow.id.in_(bindparam("ids", expanding=True)),
)


@dataclass(frozen=True, slots=True)
class PracticeParty:
    """A person found before their practice was known (by address, or by an OIDC
    account): the practice and the party."""

    practice_id: PracticeId
    party: Party


class PeopleRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # An identity map for the unit of work: a request reads its actor's member (or
        # client) row several times (authentication, then the policy's checks), and a
        # group commit's sends share one transaction. Writes through this repo and
        # rollbacks (`forget`, called by the unit of work) drop what was read.
        self._members: dict[tuple[int, int], Member] = {}
        self._clients: dict[tuple[int, int], Client] = {}
        # A member's grants and supervisees, asked for by every access check (the hub
        # checks each receiver of each event); any write to grants or supervision drops
        # them all.
        self._facts: dict[tuple[int, int], MemberFacts] = {}

    def forget(self) -> None:
        self._members.clear()
        self._clients.clear()
        self._facts.clear()

    # -- members -----------------------------------------------------------------------

    def insert_member(
        self,
        practice_id: PracticeId,
        *,
        name: str,
        email: str,
        roles: Iterable[Role],
        access_level: AccessLevel | None,
        password_hash: str | None,
        export_client_data: bool = False,
    ) -> MemberId:
        try:
            with self.conn.begin_nested():
                mid = self.conn.execute(
                    insert(MemberRow)
                    .values(
                        practice_id=practice_id,
                        name=name,
                        email=email,
                        password_hash=password_hash,
                        roles=",".join(sorted(r.value for r in roles)),
                        access_level=access_level.value if access_level else None,
                        export_client_data=export_client_data,
                        messaging_enabled=True,
                        active=True,
                        away_on=False,
                        away_text=None,
                        created_at=utcnow(),
                    )
                    .returning(MemberRow.id)
                ).scalar_one()
        except IntegrityError as exc:
            raise Conflict("email_taken", "A team member with this email already exists.") from exc
        return MemberId(mid)

    def remember_member(self, member: Member) -> None:
        """A member row read with another (a token's holder, `SessionRepo`): later
        reads in this unit of work need no query of their own."""
        self._members[member.practice_id, member.id] = member

    def get_member(self, practice_id: PracticeId, member_id: int) -> Member:
        if (known := self._members.get((practice_id, member_id))) is not None:
            return known
        row = _GET_MEMBER.one_or_none(self.conn, {"pid": practice_id, "id": member_id})
        if row is None:
            raise NotFound("team member")
        member = self._members[practice_id, member_id] = member_from_row(row)
        return member

    def members_by_id(self, practice_id: PracticeId, ids: Iterable[int]) -> dict[int, Member]:
        """These members (those that exist), by id: from this unit of work's map where
        known; the others by id on the cursor when a few (a page's participants), in
        one IN-list query when more (a batch's senders)."""
        found: dict[int, Member] = {}
        missing: list[int] = []
        for member_id in set(ids):
            known = self._members.get((practice_id, member_id))
            if known is None:
                missing.append(member_id)
            else:
                found[member_id] = known
        if len(missing) > FEW_BY_ID:
            found.update((m.id, m) for m in self.list_members(practice_id, missing))
            return found
        for member_id in missing:
            with contextlib.suppress(NotFound):
                found[member_id] = self.get_member(practice_id, member_id)
        return found

    def list_members(
        self, practice_id: PracticeId, ids: Iterable[int] | None = None
    ) -> list[Member]:
        if ids is not None:
            rows = self.conn.execute(_MEMBERS_IN, {"pid": practice_id, "ids": list(ids)})
            members = [member_from_row(r) for r in rows]
            self._members.update(((practice_id, m.id), m) for m in members)
            return members
        stmt = select(MemberRow.__table__).where(MemberRow.practice_id == practice_id)
        return [member_from_row(r) for r in self.conn.execute(stmt.order_by(MemberRow.name))]

    def find_login(self, email: str) -> tuple[Member, str | None] | None:
        """Sign-in lookup by email across practices (emails are unique)."""
        row = self.conn.execute(
            select(MemberRow.__table__).where(MemberRow.email == email.lower())
        ).one_or_none()
        return None if row is None else (member_from_row(row), row.password_hash)

    def find_client_side_by_email(self, email: str, *, limit: int = 5) -> list[PracticeParty]:
        """Clients and contacts who may use the portal (portal access on, the client
        active) with this address, across practices: one person may be a client of two
        practices. At most `limit`. Instant sign-in (PA2) and the first OIDC sign-in (PA3)
        find their person here."""
        email = email.strip().lower()
        clients = self.conn.execute(
            select(ClientRow.practice_id, ClientRow.id)
            .where(
                func.lower(ClientRow.email) == email,
                ClientRow.portal_access.is_(True),
                ClientRow.active.is_(True),
            )
            .order_by(ClientRow.id)
            .limit(limit)
        ).all()
        contacts = self.conn.execute(
            select(ContactRow.practice_id, ContactRow.id)
            .join(ClientRow, ClientRow.id == ContactRow.client_id)
            .where(
                func.lower(ContactRow.email) == email,
                ContactRow.portal_access.is_(True),
                ClientRow.active.is_(True),
            )
            .order_by(ContactRow.id)
            .limit(limit)
        ).all()
        found = [PracticeParty(PracticeId(p), Party(PartyKind.CLIENT, i)) for p, i in clients]
        found += [PracticeParty(PracticeId(p), Party(PartyKind.CONTACT, i)) for p, i in contacts]
        return found[:limit]

    def update_member(self, practice_id: PracticeId, member_id: MemberId, **values: object) -> None:
        self._members.pop((practice_id, member_id), None)
        self._facts.pop((practice_id, member_id), None)
        self.conn.execute(
            update(MemberRow)
            .where(MemberRow.practice_id == practice_id, MemberRow.id == member_id)
            .values(**values)
        )

    def member_facts(self, practice_id: PracticeId, member: Member) -> MemberFacts:
        known = self._facts.get((practice_id, member.id))
        if known is not None and known.member == member:
            return known
        # Only the relations the access rule can use for this member are loaded.
        every = sees_every_client(member)
        grants: list[int] = []
        supervisees: list[int] = []
        if not every and (member.is_clinician or member.has(Role.SUPERVISOR)):
            grants = _GRANTS_OF.scalars(self.conn, {"pid": practice_id, "mid": member.id})
        if not every and member.has(Role.SUPERVISOR):
            supervisees = list(
                self.conn.execute(_SUPERVISEES_OF, {"pid": practice_id, "mid": member.id}).scalars()
            )
        facts = self._facts[practice_id, member.id] = MemberFacts(
            member=member,
            granted_client_ids=frozenset(ClientId(c) for c in grants),
            supervisee_ids=frozenset(MemberId(s) for s in supervisees),
        )
        return facts

    def facts_for(self, practice_id: PracticeId, member_ids: Iterable[int]) -> list[MemberFacts]:
        """Several members with their grants and supervisees: three queries in all, not
        two per member (a start's recipients; the hub's receivers of a batch)."""
        members = self.list_members(practice_id, member_ids)
        need = [
            m
            for m in members
            if (known := self._facts.get((practice_id, m.id))) is None or known.member != m
        ]
        ids = [m.id for m in need if not sees_every_client(m)]
        grants: dict[int, set[int]] = {}
        supervisees: dict[int, set[int]] = {}
        if ids:
            params = {"pid": practice_id, "ids": ids}
            for mid, cid in self.conn.execute(_GRANTS_OF_MANY, params):
                grants.setdefault(mid, set()).add(cid)
            for sup, mid in self.conn.execute(_SUPERVISEES_OF_MANY, params):
                supervisees.setdefault(sup, set()).add(mid)
        for m in need:
            # As `member_facts` loads them: only the relations the access rule can use.
            every = sees_every_client(m)
            may_grant = not every and (m.is_clinician or m.has(Role.SUPERVISOR))
            supervises = not every and m.has(Role.SUPERVISOR)
            self._facts[practice_id, m.id] = MemberFacts(
                member=m,
                granted_client_ids=frozenset(
                    ClientId(c) for c in (grants.get(m.id, ()) if may_grant else ())
                ),
                supervisee_ids=frozenset(
                    MemberId(s) for s in (supervisees.get(m.id, ()) if supervises else ())
                ),
            )
        return [self._facts[practice_id, m.id] for m in members]

    def set_supervision(
        self, practice_id: PracticeId, supervisor_id: MemberId, supervisee_id: MemberId, on: bool
    ) -> None:
        where = (
            SupervisionRow.practice_id == practice_id,
            SupervisionRow.supervisor_id == supervisor_id,
            SupervisionRow.supervisee_id == supervisee_id,
        )
        self._facts.clear()
        exists = self.conn.execute(select(func.count()).where(*where)).scalar_one()
        if on and not exists:
            self.conn.execute(
                insert(SupervisionRow).values(
                    practice_id=practice_id,
                    supervisor_id=supervisor_id,
                    supervisee_id=supervisee_id,
                )
            )
        elif not on and exists:
            self.conn.execute(delete(SupervisionRow).where(*where))

    def search_members(
        self,
        practice_id: PracticeId,
        q: str,
        limit: int,
        *,
        messaging_only: bool = False,
        but: MemberId | None = None,
    ) -> list[Member]:
        """Active members by name; `messaging_only`: those whose messaging box is on
        (EN2); `but`: leaving that one out. Filtered here, so `limit` of them come back
        when there are that many."""
        stmt = select(MemberRow.__table__).where(
            MemberRow.practice_id == practice_id,
            MemberRow.active.is_(True),
            func.lower(MemberRow.name).like(_like(q), escape="\\"),
        )
        if messaging_only:
            stmt = stmt.where(MemberRow.messaging_enabled.is_(True))
        if but is not None:
            stmt = stmt.where(MemberRow.id != but)
        stmt = stmt.order_by(MemberRow.name, MemberRow.id).limit(limit)
        return [member_from_row(r) for r in self.conn.execute(stmt)]

    # -- clients -----------------------------------------------------------------------

    def insert_client(
        self,
        practice_id: PracticeId,
        *,
        name: str,
        email: str | None,
        primary_clinician_id: MemberId | None,
        portal_access: bool,
        messaging_enabled: bool,
    ) -> ClientId:
        cid = self.conn.execute(
            insert(ClientRow)
            .values(
                practice_id=practice_id,
                name=name,
                email=email,
                primary_clinician_id=primary_clinician_id,
                portal_access=portal_access,
                messaging_enabled=messaging_enabled,
                active=True,
                created_at=utcnow(),
            )
            .returning(ClientRow.id)
        ).scalar_one()
        return ClientId(cid)

    def load_clients(self, practice_id: PracticeId, client_ids: Iterable[int]) -> None:
        """Read these clients in one query, for the `get_client` calls that follow."""
        wanted = sorted({c for c in client_ids if (practice_id, c) not in self._clients})
        if wanted:
            rows = self.conn.execute(_CLIENTS_IN, {"pid": practice_id, "ids": wanted})
            self._clients.update(((practice_id, r.id), _client(r)) for r in rows)

    def get_client(self, practice_id: PracticeId, client_id: int) -> Client:
        if (known := self._clients.get((practice_id, client_id))) is not None:
            return known
        row = _GET_CLIENT.one_or_none(self.conn, {"pid": practice_id, "id": client_id})
        if row is None:
            raise NotFound("client")
        client = self._clients[practice_id, client_id] = _client(row)
        return client

    def update_client(self, practice_id: PracticeId, client_id: ClientId, **values: object) -> None:
        self._clients.pop((practice_id, client_id), None)
        self.conn.execute(
            update(ClientRow)
            .where(ClientRow.practice_id == practice_id, ClientRow.id == client_id)
            .values(**values)
        )

    def _visible_clients(self, practice_id: PracticeId, facts: MemberFacts) -> Select[Any]:
        """The SQL twin of `policy.has_client_access` (tests check they agree)."""
        m = facts.member
        stmt = select(ClientRow.__table__).where(ClientRow.practice_id == practice_id)
        if not m.active:
            return stmt.where(ClientRow.id.is_(None))
        if sees_every_client(m):
            return stmt
        conds = []
        if m.is_clinician:
            conds.append(ClientRow.primary_clinician_id == m.id)
        if m.is_clinician or m.has(Role.SUPERVISOR):
            conds.append(
                ClientRow.id.in_(
                    select(ClientAccessGrantRow.client_id).where(
                        ClientAccessGrantRow.practice_id == practice_id,
                        ClientAccessGrantRow.member_id == m.id,
                    )
                )
            )
        if m.has(Role.SUPERVISOR):
            conds.append(
                ClientRow.primary_clinician_id.in_(
                    select(SupervisionRow.supervisee_id).where(
                        SupervisionRow.practice_id == practice_id,
                        SupervisionRow.supervisor_id == m.id,
                    )
                )
            )
        if not conds:
            return stmt.where(ClientRow.id.is_(None))
        return stmt.where(or_(*conds))

    def list_visible_clients(
        self,
        practice_id: PracticeId,
        facts: MemberFacts,
        *,
        q: str = "",
        limit: int = 200,
        active_only: bool = False,
    ) -> list[Client]:
        stmt = self._visible_clients(practice_id, facts)
        if active_only:
            stmt = stmt.where(ClientRow.active.is_(True))
        if q:
            stmt = stmt.where(func.lower(ClientRow.name).like(_like(q), escape="\\"))
        stmt = stmt.order_by(ClientRow.name, ClientRow.id).limit(limit)
        return [_client(r) for r in self.conn.execute(stmt)]

    def visible_client_ids(
        self, practice_id: PracticeId, facts: MemberFacts, among: Iterable[int]
    ) -> set[int]:
        """Those of `among` the member has access to (`policy.has_client_access`)."""
        wanted = sorted(set(among))
        if not wanted:
            return set()
        stmt = self._visible_clients(practice_id, facts).where(ClientRow.id.in_(wanted))
        return {r.id for r in self.conn.execute(stmt)}

    def list_active_client_ids(self, practice_id: PracticeId) -> list[ClientId]:
        return [
            ClientId(i)
            for i in self.conn.execute(
                select(ClientRow.id).where(
                    ClientRow.practice_id == practice_id, ClientRow.active.is_(True)
                )
            ).scalars()
        ]

    def set_grant(
        self,
        practice_id: PracticeId,
        client_id: ClientId,
        member_id: MemberId,
        granted_by: MemberId,
        on: bool,
    ) -> bool:
        """Add or remove a grant; returns whether anything changed."""
        where = (
            ClientAccessGrantRow.practice_id == practice_id,
            ClientAccessGrantRow.client_id == client_id,
            ClientAccessGrantRow.member_id == member_id,
        )
        self._facts.clear()
        exists = self.conn.execute(select(func.count()).where(*where)).scalar_one()
        if on and not exists:
            self.conn.execute(
                insert(ClientAccessGrantRow).values(
                    practice_id=practice_id,
                    client_id=client_id,
                    member_id=member_id,
                    granted_by=granted_by,
                    granted_at=utcnow(),
                )
            )
            return True
        if not on and exists:
            self.conn.execute(delete(ClientAccessGrantRow).where(*where))
            return True
        return False

    def list_grants(self, practice_id: PracticeId, client_id: ClientId) -> list[MemberId]:
        return [
            MemberId(m)
            for m in self.conn.execute(
                select(ClientAccessGrantRow.member_id).where(
                    ClientAccessGrantRow.practice_id == practice_id,
                    ClientAccessGrantRow.client_id == client_id,
                )
            ).scalars()
        ]

    # -- contacts ----------------------------------------------------------------------

    def insert_contact(
        self,
        practice_id: PracticeId,
        client_id: ClientId,
        *,
        name: str,
        email: str | None,
        relationship: str,
        portal_access: bool,
        messaging_enabled: bool,
    ) -> ContactId:
        cid = self.conn.execute(
            insert(ContactRow)
            .values(
                practice_id=practice_id,
                client_id=client_id,
                name=name,
                email=email,
                relationship=relationship,
                portal_access=portal_access,
                messaging_enabled=messaging_enabled,
                created_at=utcnow(),
            )
            .returning(ContactRow.id)
        ).scalar_one()
        return ContactId(cid)

    def get_contact(self, practice_id: PracticeId, contact_id: int) -> Contact:
        row = self.conn.execute(
            select(ContactRow.__table__).where(
                ContactRow.practice_id == practice_id, ContactRow.id == contact_id
            )
        ).one_or_none()
        if row is None:
            raise NotFound("contact")
        return _contact(row)

    def list_contacts(self, practice_id: PracticeId, client_id: ClientId) -> Sequence[Contact]:
        return [
            _contact(r)
            for r in self.conn.execute(_CONTACTS_OF, {"pid": practice_id, "cid": client_id})
        ]

    def update_contact(
        self, practice_id: PracticeId, contact_id: ContactId, **values: object
    ) -> None:
        self.conn.execute(
            update(ContactRow)
            .where(ContactRow.practice_id == practice_id, ContactRow.id == contact_id)
            .values(**values)
        )
