"""The demo practice: "Maple Street Practice", with memorable people in every role,
clients with contacts, and some history. Created once; later runs only print how to
sign in. Demo mode only: the password below is public.
"""

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.entities import AccessLevel, Plan, Role
from confide.runtime import Runtime
from confide.services import clients, messaging, practice, team
from confide.store.uow import unit_of_work

PRACTICE_NAME = "Maple Street Practice"
DEMO_PASSWORD = "maple-street-demo"  # noqa: S105 - the public demo password


@dataclass(frozen=True)
class DemoMember:
    name: str
    email: str
    roles: tuple[Role, ...]
    access_level: AccessLevel | None = None
    export: bool = False


OWNER = DemoMember(
    "Olivia Owens",
    "olivia@maple.test",
    (Role.ACCOUNT_OWNER, Role.CLINICIAN),
    AccessLevel.ENTIRE_PRACTICE,
)
TEAM = [
    DemoMember("Priya Patel", "priya@maple.test", (Role.PRACTICE_MANAGER,), export=True),
    DemoMember("Carl Chen", "carl@maple.test", (Role.CLINICIAN,), AccessLevel.BASIC),
    DemoMember("Fiona Ford", "fiona@maple.test", (Role.CLINICIAN,), AccessLevel.FULL_CLIENT_LIST),
    DemoMember("Sam Stone", "sam@maple.test", (Role.CLINICIAN, Role.SUPERVISOR), AccessLevel.BASIC),
    DemoMember("Bea Brooks", "bea@maple.test", (Role.BILLER,)),
    DemoMember("Scott Sato", "scott@maple.test", (Role.SCHEDULER,)),
]


def _exists(runtime: Runtime) -> bool:
    with unit_of_work(runtime.db, write=False) as uow:
        return uow.people.find_login(OWNER.email) is not None


def ensure_demo_practice(runtime: Runtime, console: Console, *, origin: str) -> None:
    if not _exists(runtime):
        _create(runtime)
        console.print(f"[green]Created the demo practice, {PRACTICE_NAME}.[/green]")
    table = Table(title=f"{PRACTICE_NAME}: sign in with password '{DEMO_PASSWORD}'")
    table.add_column("Team member")
    table.add_column("Email")
    table.add_column("Role")
    for m in [OWNER, *TEAM]:
        label = ", ".join(r.value.replace("_", " ") for r in m.roles)
        if m.access_level:
            label += f" ({m.access_level.value.replace('_', ' ')})"
        table.add_row(m.name, m.email, label)
    console.print(table)
    console.print(f"Web app: {origin}/  (sign in as any team member above)")
    console.print(f"API: {origin}/api/v1  (OpenAPI description: {origin}/api/v1/openapi.json)")
    console.print(
        f"Sign in: curl -c jar -H 'content-type: application/json' "
        f'-d \'{{"email":"carl@maple.test","password":"{DEMO_PASSWORD}"}}\' '
        f"{origin}/api/v1/auth/login"
    )
    if runtime.settings.smtp_url is None:
        # Emails (notifications, sign-in links) go to the mail folder in the demo.
        console.print(f"Emails Confide sends: {origin}/dev/mailbox")
        console.print(f"Client instant sign-in: {origin}/l/sign-in")


def _create(runtime: Runtime) -> None:
    db, pw = runtime.db, runtime.passwords
    with unit_of_work(db) as uow:
        pid, owner_id = practice.create_practice(
            uow,
            pw,
            name=PRACTICE_NAME,
            plan=Plan.PLUS,
            owner_name=OWNER.name,
            owner_email=OWNER.email,
            owner_password=DEMO_PASSWORD,
            owner_access_level=OWNER.access_level,
        )
    owner = Actor(pid, Party(PartyKind.MEMBER, owner_id), Via.CLI)
    with unit_of_work(db) as uow:
        practice.set_messaging_switches(
            uow, owner, team=True, clients=True, auto_allow_new_clients=True
        )
    ids: dict[str, int] = {OWNER.email: owner_id}
    for m in TEAM:
        with unit_of_work(db) as uow:
            ids[m.email] = team.add_member(
                uow,
                owner,
                pw,
                name=m.name,
                email=m.email,
                roles=m.roles,
                access_level=m.access_level,
                export_client_data=m.export,
                password=DEMO_PASSWORD,
            ).id
    with unit_of_work(db) as uow:
        team.set_supervision(
            uow,
            owner,
            supervisor_id=ids["sam@maple.test"],
            supervisee_id=ids["carl@maple.test"],
            on=True,
        )

    def client(name: str, email: str, clinician: str) -> int:
        with unit_of_work(db) as uow:
            return clients.create_client(
                uow, owner, name=name, email=email, primary_clinician_id=ids[clinician]
            ).id

    alex = client("Alex Rivera", "alex@example.test", "carl@maple.test")
    jordan = client("Jordan Lee", "jordan@example.test", "fiona@maple.test")
    casey = client("Casey Morgan", "casey@example.test", "carl@maple.test")
    with unit_of_work(db) as uow:
        clients.add_contact(
            uow,
            owner,
            casey,
            name="Pat Morgan",
            email="pat@example.test",
            relationship="Parent",
            portal_access=True,
            messaging_enabled=True,
        )
    with unit_of_work(db) as uow:
        clients.set_client_messaging(uow, owner, casey, messaging_enabled=False)

    carl = Actor(pid, Party(PartyKind.MEMBER, ids["carl@maple.test"]), Via.CLI)
    alex_actor = Actor(pid, Party(PartyKind.CLIENT, alex), Via.CLI)
    with unit_of_work(db) as uow:
        sent = messaging.start_conversation(
            uow,
            carl,
            messaging.StartConversation(
                member_ids=(),
                client_id=alex,
                text="Hi Alex, this is Carl. Just checking in "
                "before Thursday's session. How has the week been? :slightly_smiling_face:",
                idempotency_key="demo-1",
            ),
        )
    with unit_of_work(db) as uow:
        messaging.send_message(
            uow,
            alex_actor,
            messaging.SendMessage(
                sent.conversation.id,
                "Better than last week, thanks. Could we move Thursday to 4pm?",
                "demo-2",
            ),
        )
    with unit_of_work(db) as uow:
        messaging.start_conversation(
            uow,
            carl,
            messaging.StartConversation(
                member_ids=(ids["scott@maple.test"],),
                text="Scott, could you move Alex's Thursday "
                "appointment to 4pm if there is room? :thumbsup:",
                idempotency_key="demo-3",
            ),
        )
    jordan_actor = Actor(pid, Party(PartyKind.CLIENT, jordan), Via.CLI)
    with unit_of_work(db) as uow:
        messaging.start_conversation(
            uow,
            jordan_actor,
            messaging.StartConversation(
                member_ids=(ids["bea@maple.test"],),
                text="Hello, I have a question about my last invoice.",
                idempotency_key="demo-4",
            ),
        )
