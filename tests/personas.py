"""The seeded practices of the tests: memorable people in every role (Zulip's hamlet
and iago, for Confide). Built through the real services, so tests start from states the
product itself can reach.

Practice A, "Maple Street" (plan plus, messaging on):
  olivia  account owner (also clinician, entire practice)
  priya   practice manager with export_client_data     pete  practice manager, no export
  carl    clinician, basic: primary of alex and casey   fiona clinician, full client list
  erin    clinician, entire practice                    betty clinician, billing: primary of jordan
  sam     supervisor (+ clinician basic) of carl        gus   supervisor of nobody
  bill    biller                                        sally scheduler
  dora    clinician, basic, messaging box off (EN2)
Clients: alex (primary carl, messaging on), jordan (primary betty, on),
  casey (primary carl, messaging off), nora (no primary clinician, on, granted to gus);
  contact pat (parent of jordan, portal + messaging on).
Practice B, "Birch Road" (plan plus): owen (owner), bea (clinician), zoe (client of bea).
"""

import itertools
from dataclasses import dataclass, field

from starlette.testclient import TestClient

from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.entities import AccessLevel, Plan, Role
from confide.domain.ids import PracticeId
from confide.runtime import Runtime
from confide.services import clients, messaging, practice, sessions, team
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests import phi_watch

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)

MEMBERS_A: dict[str, tuple[tuple[Role, ...], AccessLevel | None, bool]] = {
    "priya": ((Role.PRACTICE_MANAGER,), None, True),
    "pete": ((Role.PRACTICE_MANAGER,), None, False),
    "carl": ((Role.CLINICIAN,), AccessLevel.BASIC, False),
    "fiona": ((Role.CLINICIAN,), AccessLevel.FULL_CLIENT_LIST, False),
    "erin": ((Role.CLINICIAN,), AccessLevel.ENTIRE_PRACTICE, False),
    "betty": ((Role.CLINICIAN,), AccessLevel.BILLING, False),
    "sam": ((Role.CLINICIAN, Role.SUPERVISOR), AccessLevel.BASIC, False),
    "gus": ((Role.SUPERVISOR,), None, False),
    "bill": ((Role.BILLER,), None, False),
    "sally": ((Role.SCHEDULER,), None, False),
    "dora": ((Role.CLINICIAN,), AccessLevel.BASIC, False),
}


@dataclass
class World:
    runtime: Runtime
    practice_a: PracticeId
    practice_b: PracticeId
    parties: dict[str, Party] = field(default_factory=dict)
    practice_of: dict[str, PracticeId] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, TestClient] = field(default_factory=dict)

    def id(self, name: str) -> int:
        return self.parties[name].id

    def actor(self, name: str) -> Actor:
        return Actor(self.practice_of[name], self.parties[name], Via.INTERNAL)

    def api(self, name: str) -> TestClient:
        """An HTTP client signed in as `name` (members: API token; clients: session)."""
        if name not in self._clients:
            self._clients[name] = self.signed_in(name)
        return self._clients[name]

    def signed_in(self, name: str) -> TestClient:
        client = anonymous(self.runtime)
        actor = self.actor(name)
        with unit_of_work(self.runtime.db) as uow:
            if actor.party.kind is PartyKind.MEMBER:
                _id, token = sessions.create_api_token(uow, actor, name="tests")
                client.headers["Authorization"] = f"Bearer {token}"
                return client
            session_id = sessions.start_session(
                uow, Actor(actor.practice_id, actor.party, Via.MAGIC_LINK)
            )
        client.cookies.set("__Host-confide_session", session_id, domain="testserver.local")
        return client


def anonymous(runtime: Runtime) -> TestClient:
    return TestClient(
        create_app(runtime), base_url="https://testserver", raise_server_exceptions=False
    )


def build_world(runtime: Runtime) -> World:
    n = next(_counter)
    db, pw = runtime.db, runtime.passwords
    tag = f"{n}-{id(runtime) % 10_000}"

    def email(name: str) -> str:
        return f"{name}.{tag}@{'maple' if name not in ('owen', 'bea') else 'birch'}.test"

    with unit_of_work(db) as uow:
        pa, olivia = practice.create_practice(
            uow,
            pw,
            name="Maple Street",
            plan=Plan.PLUS,
            owner_name="Olivia Owens",
            owner_email=email("olivia"),
            owner_password=PASSWORD,
            owner_access_level=AccessLevel.ENTIRE_PRACTICE,
        )
    with unit_of_work(db) as uow:
        pb, owen = practice.create_practice(
            uow,
            pw,
            name="Birch Road",
            plan=Plan.PLUS,
            owner_name="Owen Oak",
            owner_email=email("owen"),
            owner_password=PASSWORD,
        )
    w = World(runtime, pa, pb)
    w.parties.update(olivia=Party.member(olivia), owen=Party.member(owen))
    w.practice_of.update(olivia=pa, owen=pb)
    w.emails.update(olivia=email("olivia"), owen=email("owen"))
    owner_a, owner_b = w.actor("olivia"), w.actor("owen")
    for owner in (owner_a, owner_b):
        with unit_of_work(db) as uow:
            practice.set_messaging_switches(uow, owner, team=True, clients=True)
    for name, (roles, level, export) in MEMBERS_A.items():
        with unit_of_work(db) as uow:
            m = team.add_member(
                uow,
                owner_a,
                pw,
                name=name.title() + " Test",
                email=email(name),
                roles=roles,
                access_level=level,
                export_client_data=export,
                password=PASSWORD,
            )
        w.parties[name], w.practice_of[name], w.emails[name] = m.party, pa, email(name)
    with unit_of_work(db) as uow:
        bea = team.add_member(
            uow,
            owner_b,
            pw,
            name="Bea Birch",
            email=email("bea"),
            roles=[Role.CLINICIAN],
            access_level=AccessLevel.BASIC,
            password=PASSWORD,
        )
    w.parties["bea"], w.practice_of["bea"], w.emails["bea"] = bea.party, pb, email("bea")
    with unit_of_work(db) as uow:
        team.set_supervision(
            uow, owner_a, supervisor_id=w.id("sam"), supervisee_id=w.id("carl"), on=True
        )
    with unit_of_work(db) as uow:
        team.set_member_messaging(uow, owner_a, w.id("dora"), enabled=False)

    def add_client(owner: Actor, name: str, clinician: str | None, on: bool) -> None:
        with unit_of_work(db) as uow:
            c = clients.create_client(
                uow,
                owner,
                name=name.title() + " Client",
                email=f"{name}.{tag}@example.test",
                primary_clinician_id=w.id(clinician) if clinician else None,
            )
        if on:
            with unit_of_work(db) as uow:
                clients.enable_client_messaging(uow, owner, c.id)
        w.parties[name], w.practice_of[name] = c.party, owner.practice_id
        phi_watch.WATCH.watch(c.name, f"{name}.{tag}@example.test")

    add_client(owner_a, "alex", "carl", True)
    add_client(owner_a, "jordan", "betty", True)
    add_client(owner_a, "casey", "carl", False)
    add_client(owner_a, "nora", None, True)
    add_client(owner_b, "zoe", "bea", True)
    with unit_of_work(db) as uow:
        clients.set_client_access_grant(uow, owner_a, w.id("nora"), w.id("gus"), on=True)
    with unit_of_work(db) as uow:
        pat = clients.add_contact(
            uow,
            owner_a,
            w.id("jordan"),
            name="Pat Parent",
            email=f"pat.{tag}@example.test",
            relationship="Parent",
            portal_access=True,
            messaging_enabled=True,
        )
    w.parties["pat"], w.practice_of["pat"] = pat.party, pa
    phi_watch.WATCH.watch("Pat Parent", f"pat.{tag}@example.test", *w.emails.values())
    return w


def start(
    w: World,
    by: str,
    *,
    members: tuple[str, ...] = (),
    client: str | None = None,
    contact: str | None = None,
    text: str = "Hello",
) -> messaging.Sent:
    """Start a conversation through the service, as `by`."""
    with unit_of_work(w.runtime.db) as uow:
        return messaging.start_conversation(
            uow,
            w.actor(by),
            messaging.StartConversation(
                member_ids=tuple(w.id(m) for m in members),
                client_id=w.id(client) if client else None,
                contact_id=w.id(contact) if contact else None,
                text=text,
                idempotency_key=f"k-{next(_counter)}",
            ),
        )
