"""Personas and builders for the domain unit tests: plain frozen data, no I/O.

One practice ("Harbor Counseling", id 1) with a member of every role and access level,
a few clients and contacts, and a second practice (id 2) to prove tenancy. Rows of the
policy tables read as sentences: ``facts(SAM, supervises=[CARL])`` is "Sam, who
supervises Carl".

Who is who:
- Olivia Owner: the account owner, and nothing else.
- Pam Manager: practice manager without `export_client_data`; Petra Exporter: with it.
- Bill Biller, Sally Scheduler.
- Erin Entire, Frank Fulllist, Betty Billing, Carl Basic, Grace Granted: clinicians with
  access levels entire_practice, full_client_list, billing, basic, basic.
- Sam Supervisor (supervisor only); Susan Supervisor (supervisor + basic clinician).
- Iris Inactive (a deactivated full_client_list clinician); Dora Disabled (an active
  full_client_list clinician whose "enabled for secure messaging" box is off).
- Oscar Owner and Otto Other: owner and full_client_list clinician of practice 2.
- Clients: Chloe (primary Carl), Daniel (primary Betty), Nora (no primary clinician),
  Quinn (practice 2, primary Otto). Contacts: Gina (Chloe's guardian), Derek (Daniel's
  partner), Ursula (Quinn's parent, practice 2).
"""

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from confide.domain.actors import Party, PartyKind
from confide.domain.entities import (
    AccessLevel,
    Client,
    Contact,
    Conversation,
    Member,
    MemberFacts,
    Message,
    Participant,
    Plan,
    Practice,
    Role,
)
from confide.domain.ids import (
    ClientId,
    ContactId,
    ConversationId,
    MemberId,
    MessageId,
    PracticeId,
)
from confide.domain.policy import ConversationView, Decision, StartRequest

PRACTICE_ID = PracticeId(1)
OTHER_PRACTICE_ID = PracticeId(2)
NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
T = TypeVar("T")

# --- expected decisions -----------------------------------------------------------------

OK = Decision(True, "ok")


def refused(code: str) -> Decision:
    """The Decision a refusal must equal: flag and reason code together."""
    return Decision(False, code)


# --- builders -----------------------------------------------------------------------------


def practice(
    plan: Plan = Plan.ESSENTIAL,
    *,
    team: bool = True,
    clients: bool = True,
    auto_allow: bool = False,
    practice_id: PracticeId = PRACTICE_ID,
) -> Practice:
    """A practice on `plan`; both messaging switches on unless said otherwise."""
    return Practice(
        id=practice_id,
        name="Harbor Counseling" if practice_id == PRACTICE_ID else "Elsewhere Therapy",
        plan=plan,
        team_messaging=team,
        client_messaging=clients,
        auto_allow_new_clients=auto_allow,
    )


def member(
    member_id: int,
    name: str,
    *roles: Role,
    access: AccessLevel | None = None,
    export: bool = False,
    enabled: bool = True,
    active: bool = True,
    practice_id: PracticeId = PRACTICE_ID,
) -> Member:
    return Member(
        id=MemberId(member_id),
        practice_id=practice_id,
        name=name,
        email=name.lower().replace(" ", ".") + f"@practice{practice_id}.example",
        roles=frozenset(roles),
        access_level=access,
        export_client_data=export,
        messaging_enabled=enabled,
        active=active,
    )


def facts(
    who: Member,
    *,
    granted: Iterable[Client] = (),
    supervises: Iterable[Member] = (),
) -> MemberFacts:
    """A member with the clients granted to them and the clinicians they supervise."""
    return MemberFacts(
        member=who,
        granted_client_ids=frozenset(c.id for c in granted),
        supervisee_ids=frozenset(m.id for m in supervises),
    )


def client(
    client_id: int,
    name: str,
    *,
    primary: Member | None,
    portal: bool = True,
    messaging: bool = True,
    active: bool = True,
    practice_id: PracticeId = PRACTICE_ID,
) -> Client:
    """A client; portal access and secure messaging on unless said otherwise."""
    return Client(
        id=ClientId(client_id),
        practice_id=practice_id,
        name=name,
        email=name.lower().replace(" ", ".") + "@mail.example",
        primary_clinician_id=primary.id if primary is not None else None,
        portal_access=portal,
        messaging_enabled=messaging,
        active=active,
    )


def contact(
    contact_id: int,
    name: str,
    of: Client,
    *,
    relationship: str = "guardian",
    portal: bool = True,
    messaging: bool = True,
) -> Contact:
    return Contact(
        id=ContactId(contact_id),
        practice_id=of.practice_id,
        client_id=of.id,
        name=name,
        email=name.lower().replace(" ", ".") + "@mail.example",
        relationship=relationship,
        portal_access=portal,
        messaging_enabled=messaging,
    )


def conversation(
    *parties: Party,
    about: Client | None = None,
    started_by: Party | None = None,
    last_activity_at: datetime = NOW,
    practice_id: PracticeId = PRACTICE_ID,
) -> Conversation:
    """A conversation between `parties`, about client `about` (None: team-only)."""
    return Conversation(
        id=ConversationId(1),
        practice_id=practice_id,
        client_id=about.id if about is not None else None,
        participants=tuple(Participant(p) for p in parties),
        last_seq=3,
        last_activity_at=last_activity_at,
        started_by=started_by if started_by is not None else parties[0],
    )


def view(
    conv: Conversation,
    *,
    on: Practice | None = None,
    about: Client | None = None,
    acting_contact: Contact | None = None,
) -> ConversationView:
    return ConversationView(
        practice=on if on is not None else practice(),
        conversation=conv,
        client=about,
        contact=acting_contact,
    )


def start(
    *recipients: MemberFacts,
    on: Practice | None = None,
    about: Client | None = None,
    contact_side: Contact | None = None,
) -> StartRequest:
    """A StartRequest: team recipients, and the client (or contact) when there is one."""
    return StartRequest(
        practice=on if on is not None else practice(),
        members=recipients,
        client=about,
        contact=contact_side,
    )


def message(sender: Party, *, removed_by: Party | None = None) -> Message:
    return Message(
        id=MessageId(1),
        conversation_id=ConversationId(1),
        seq=1,
        sender=sender,
        text=None if removed_by is not None else "See you on Tuesday at 3.",
        created_at=NOW,
        removed_at=NOW + timedelta(minutes=5) if removed_by is not None else None,
        removed_by=removed_by,
    )


def but(obj: T, **changes: object) -> T:
    """`but(CARL, active=False)`: a persona with one thing changed."""
    return replace(obj, **changes)  # type: ignore[type-var]


SYSTEM = Party(PartyKind.SYSTEM, 0)

# --- practice 1: Harbor Counseling --------------------------------------------------------

OLIVIA = member(1, "Olivia Owner", Role.ACCOUNT_OWNER)
PAM = member(2, "Pam Manager", Role.PRACTICE_MANAGER)
PETRA = member(3, "Petra Exporter", Role.PRACTICE_MANAGER, export=True)
BILL = member(4, "Bill Biller", Role.BILLER)
SALLY = member(5, "Sally Scheduler", Role.SCHEDULER)
ERIN = member(6, "Erin Entire", Role.CLINICIAN, access=AccessLevel.ENTIRE_PRACTICE)
FRANK = member(7, "Frank Fulllist", Role.CLINICIAN, access=AccessLevel.FULL_CLIENT_LIST)
BETTY = member(8, "Betty Billing", Role.CLINICIAN, access=AccessLevel.BILLING)
CARL = member(9, "Carl Basic", Role.CLINICIAN, access=AccessLevel.BASIC)
GRACE = member(10, "Grace Granted", Role.CLINICIAN, access=AccessLevel.BASIC)
SAM = member(11, "Sam Supervisor", Role.SUPERVISOR)
SUSAN = member(12, "Susan Supervisor", Role.SUPERVISOR, Role.CLINICIAN, access=AccessLevel.BASIC)
IRIS = member(
    13, "Iris Inactive", Role.CLINICIAN, access=AccessLevel.FULL_CLIENT_LIST, active=False
)
DORA = member(
    14, "Dora Disabled", Role.CLINICIAN, access=AccessLevel.FULL_CLIENT_LIST, enabled=False
)

# Every active, enabled member of practice 1 (PM1 pairs them all).
ENABLED_TEAM = (OLIVIA, PAM, PETRA, BILL, SALLY, ERIN, FRANK, BETTY, CARL, GRACE, SAM, SUSAN)

CHLOE = client(101, "Chloe Client", primary=CARL)
DANIEL = client(102, "Daniel Client", primary=BETTY)
NORA = client(103, "Nora Noprimary", primary=None)
GINA = contact(201, "Gina Guardian", CHLOE)
DEREK = contact(202, "Derek Partner", DANIEL, relationship="partner")

# --- practice 2: Elsewhere Therapy --------------------------------------------------------

OSCAR = member(51, "Oscar Owner", Role.ACCOUNT_OWNER, practice_id=OTHER_PRACTICE_ID)
OTTO = member(
    52,
    "Otto Other",
    Role.CLINICIAN,
    access=AccessLevel.FULL_CLIENT_LIST,
    practice_id=OTHER_PRACTICE_ID,
)
QUINN = client(151, "Quinn Elsewhere", primary=OTTO, practice_id=OTHER_PRACTICE_ID)
URSULA = contact(251, "Ursula Parent", QUINN, relationship="parent")
