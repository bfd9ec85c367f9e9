"""THE permission module: every who-may question of SPEC, answered once, purely.

Each predicate takes plain facts and returns a Decision with a reason code; none
raises for "no" and none does I/O. Services turn a refusal into an error, choosing
NotFound where the actor must not learn that the object exists (PM7).

Choices where SPEC is silent (also in docs/policy.md):
- Editing a client (portal access, messaging box, contacts): the account owner,
  practice managers, schedulers, and clinicians and supervisors with access to the
  client. Billers see every client but do not edit them.
- Granting client access and supervision links: whoever manages the team.
- The EN2 box: the account owner for anyone; other practice-settings editors for
  anyone but the account owner.
- A member of a client conversation needs access to that client to read or write in
  it; losing access to the client closes the conversation for them (revocation).
- Team members may read history while the practice switch is off; they may not send.
  A member whose own EN2 box is off neither sends nor receives (reads).
- A member may write in a client conversation only while the client side may read it
  (EN3); otherwise the refusal carries the EN3 reason so the app can offer EN5.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from confide.domain.actors import Party, PartyKind
from confide.domain.entities import (
    AccessLevel,
    Client,
    Contact,
    Conversation,
    Member,
    MemberFacts,
    Message,
    Plan,
    Practice,
    Role,
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: str = "ok"

    def __bool__(self) -> bool:
        return self.allowed


ALLOW: Final = Decision(True)


def deny(code: str) -> Decision:
    return Decision(False, code)


# Reason codes (public: they travel in API errors).
PLAN_REQUIRED: Final = "plan_required"
TEAM_MESSAGING_OFF: Final = "team_messaging_off"
CLIENT_MESSAGING_OFF_PRACTICE: Final = "practice_client_messaging_off"
MEMBER_MESSAGING_OFF: Final = "member_messaging_disabled"
RECIPIENT_MESSAGING_OFF: Final = "recipient_messaging_disabled"
CLIENT_MESSAGING_OFF: Final = "client_messaging_off"
NO_PORTAL_ACCESS: Final = "no_portal_access"
NO_CLIENT_ACCESS: Final = "no_client_access"
RECIPIENT_NO_ACCESS: Final = "recipient_no_client_access"
NOT_ALLOWED_TO_START: Final = "recipient_not_allowed"
TWO_CLIENTS: Final = "one_client_per_conversation"
NO_RECIPIENTS: Final = "no_recipients"
NOT_PARTICIPANT: Final = "not_participant"
INACTIVE: Final = "inactive"
OTHER_PRACTICE: Final = "other_practice"  # services answer NotFound for it (PM7)
NOT_SENDER: Final = "not_sender"
ALREADY_REMOVED: Final = "already_removed"
NOT_PERMITTED: Final = "not_permitted"
ANNOUNCEMENTS_PLAN: Final = "plan_required"

_EVERY_CLIENT_ROLES: Final = frozenset(
    {Role.ACCOUNT_OWNER, Role.PRACTICE_MANAGER, Role.BILLER, Role.SCHEDULER}
)
_EVERY_CLIENT_LEVELS: Final = frozenset({AccessLevel.ENTIRE_PRACTICE, AccessLevel.FULL_CLIENT_LIST})


# --- plans (PL1, PL2) --------------------------------------------------------------


def may_use_messaging(practice: Practice) -> Decision:
    """PL1: secure messaging exists on `essential` and `plus` only."""
    if practice.plan in (Plan.ESSENTIAL, Plan.PLUS):
        return ALLOW
    return deny(PLAN_REQUIRED)


# --- practice settings and team management ------------------------------------------


def may_change_practice_settings(member: Member) -> Decision:
    """Practice settings: the account owner, practice managers, and clinicians with
    `entire_practice` access."""
    if not member.active:
        return deny(INACTIVE)
    if member.has(Role.ACCOUNT_OWNER) or member.has(Role.PRACTICE_MANAGER):
        return ALLOW
    if member.is_clinician and member.access_level is AccessLevel.ENTIRE_PRACTICE:
        return ALLOW
    return deny(NOT_PERMITTED)


def may_set_practice_switches(practice: Practice, *, team: bool, clients: bool) -> Decision:
    """EN1: client messaging needs team messaging on. (Switching team messaging off
    also switches client messaging off: the service applies that, not a refusal.)
    PL1: switching messaging on needs a plan that has it."""
    if (team or clients) and not (d := may_use_messaging(practice)):
        return d
    if clients and not team:
        return deny(TEAM_MESSAGING_OFF)
    return ALLOW


def may_manage_team(member: Member) -> Decision:
    """Only the account owner and practice managers add, change or remove team members."""
    if member.active and (member.has(Role.ACCOUNT_OWNER) or member.has(Role.PRACTICE_MANAGER)):
        return ALLOW
    return deny(NOT_PERMITTED)


def may_set_member_messaging(actor: Member, target: Member) -> Decision:
    """EN2: the account owner can change anyone's box; other settings editors anyone's
    but the account owner's."""
    if actor.practice_id != target.practice_id:
        return deny(NOT_PERMITTED)
    if actor.active and actor.has(Role.ACCOUNT_OWNER):
        return ALLOW
    if target.has(Role.ACCOUNT_OWNER):
        return deny(NOT_PERMITTED)
    return may_change_practice_settings(actor)


def may_change_member(actor: Member, target: Member) -> Decision:
    """Roles and access levels: team managers; only the account owner changes their own
    record's roles (a practice manager cannot demote the owner)."""
    if not may_manage_team(actor) or actor.practice_id != target.practice_id:
        return deny(NOT_PERMITTED)
    if target.has(Role.ACCOUNT_OWNER) and not actor.has(Role.ACCOUNT_OWNER):
        return deny(NOT_PERMITTED)
    return ALLOW


def validate_roles(roles: Iterable[Role], access_level: AccessLevel | None) -> Decision:
    """At most one clinician role, with an access level; an access level only with it."""
    role_set = set(roles)
    if not role_set:
        return deny("roles_required")
    if Role.CLINICIAN in role_set and access_level is None:
        return deny("access_level_required")
    if Role.CLINICIAN not in role_set and access_level is not None:
        return deny("access_level_without_clinician")
    return ALLOW


# --- access to a client ----------------------------------------------------------------


def has_client_access(facts: MemberFacts, client: Client) -> bool:
    """ "Access to a client" of SPEC: who can see the client's profile and transcripts."""
    m = facts.member
    if not m.active or m.practice_id != client.practice_id:
        return False
    if m.roles & _EVERY_CLIENT_ROLES:
        return True
    if m.is_clinician and m.access_level in _EVERY_CLIENT_LEVELS:
        return True
    if m.is_clinician and client.primary_clinician_id == m.id:
        return True
    if client.id in facts.granted_client_ids and (m.is_clinician or m.has(Role.SUPERVISOR)):
        return True
    return (
        m.has(Role.SUPERVISOR)
        and client.primary_clinician_id is not None
        and client.primary_clinician_id in facts.supervisee_ids
    )


def sees_every_client(member: Member) -> bool:
    """True when access does not depend on assignments (used to shape list queries)."""
    return bool(
        member.active
        and (
            member.roles & _EVERY_CLIENT_ROLES
            or (member.is_clinician and member.access_level in _EVERY_CLIENT_LEVELS)
        )
    )


def may_view_client(facts: MemberFacts, client: Client) -> Decision:
    return ALLOW if has_client_access(facts, client) else deny(NO_CLIENT_ACCESS)


def may_edit_client(facts: MemberFacts, client: Client) -> Decision:
    """EN3/EN5/EN6 switches and contacts. See the module docstring for who."""
    if not has_client_access(facts, client):
        return deny(NO_CLIENT_ACCESS)
    m = facts.member
    if m.has(Role.BILLER) and not (
        m.roles
        & {
            Role.ACCOUNT_OWNER,
            Role.PRACTICE_MANAGER,
            Role.SCHEDULER,
            Role.CLINICIAN,
            Role.SUPERVISOR,
        }
    ):
        return deny(NOT_PERMITTED)
    return ALLOW


def may_create_client(member: Member) -> Decision:
    if not member.active:
        return deny(INACTIVE)
    if member.roles & {Role.ACCOUNT_OWNER, Role.PRACTICE_MANAGER, Role.SCHEDULER, Role.CLINICIAN}:
        return ALLOW
    return deny(NOT_PERMITTED)


def may_grant_client_access(member: Member) -> Decision:
    """Granting a clinician or supervisor access to a client: team managers."""
    return may_manage_team(member)


# --- being able to message at all (EN1-EN3, EN6, PL1) ---------------------------------


def member_may_message(practice: Practice, member: Member) -> Decision:
    """EN1 + EN2 + PL1: the practice's team switch and the member's own box."""
    if not (d := may_use_messaging(practice)):
        return d
    if member.practice_id != practice.id:
        return deny(OTHER_PRACTICE)
    if not member.active:
        return deny(INACTIVE)
    if not practice.team_messaging:
        return deny(TEAM_MESSAGING_OFF)
    if not member.messaging_enabled:
        return deny(MEMBER_MESSAGING_OFF)
    return ALLOW


def client_side_may_message(
    practice: Practice, client: Client, contact: Contact | None = None
) -> Decision:
    """EN3 (and EN6): the practice client switch, portal access, and their own box.

    For a contact, "their own" portal access and box are the contact's. The client must
    still be an active client of the practice.
    """
    if not (d := may_use_messaging(practice)):
        return d
    if not client.active or client.practice_id != practice.id:
        return deny(INACTIVE)
    if contact is not None and (
        contact.client_id != client.id or contact.practice_id != client.practice_id
    ):
        return deny(NOT_PARTICIPANT)
    if not (practice.team_messaging and practice.client_messaging):
        return deny(CLIENT_MESSAGING_OFF_PRACTICE)
    who: Client | Contact = contact if contact is not None else client
    if not who.portal_access:
        return deny(NO_PORTAL_ACCESS)
    if not who.messaging_enabled:
        return deny(CLIENT_MESSAGING_OFF)
    return ALLOW


# --- who may message whom (PM1-PM6) ----------------------------------------------------


def client_may_start_with(facts: MemberFacts, client: Client) -> bool:
    """PM4: a client (or their contact) may START a conversation only with their primary
    clinician, practice managers, billers, schedulers, and supervisors who have access
    to them or also hold the biller or scheduler role."""
    m = facts.member
    if not m.active or m.practice_id != client.practice_id:
        return False
    if m.is_clinician and client.primary_clinician_id == m.id:
        return True
    if m.roles & {Role.PRACTICE_MANAGER, Role.BILLER, Role.SCHEDULER}:
        return True
    return m.has(Role.SUPERVISOR) and has_client_access(facts, client)


def member_may_message_client(facts: MemberFacts, client: Client) -> Decision:
    """PM2 + PM3: a clinician needs access to the client; billers, schedulers, practice
    managers and the account owner reach any client (through `has_client_access`)."""
    return ALLOW if has_client_access(facts, client) else deny(NO_CLIENT_ACCESS)


@dataclass(frozen=True, slots=True)
class StartRequest:
    """The facts of "start a conversation": who starts, with whom."""

    practice: Practice
    members: tuple[MemberFacts, ...]  # team recipients (not the starter)
    client: Client | None = None  # the client the conversation is about
    contact: Contact | None = None  # set when the client side is a contact


def may_member_start_conversation(starter: MemberFacts, req: StartRequest) -> Decision:
    """PM1, PM2, PM3, PM6, EN1-EN3 for a team member starting a conversation.

    EN5: when the client's messaging is off the code is `client_messaging_off` (or
    `no_portal_access`), so the app can offer "Enable secure messaging".
    """
    if not (d := member_may_message(req.practice, starter.member)):
        return d
    if not req.members and req.client is None:
        return deny(NO_RECIPIENTS)
    for facts in req.members:
        if facts.member.id == starter.member.id:
            continue
        if facts.member.practice_id != req.practice.id:
            return deny(OTHER_PRACTICE)
        if not facts.member.active or not facts.member.messaging_enabled:
            return deny(RECIPIENT_MESSAGING_OFF)
    if req.client is None:
        return ALLOW  # PM1: any two enabled team members
    if not (d := member_may_message_client(starter, req.client)):
        return d
    for facts in req.members:
        if not has_client_access(facts, req.client):
            return deny(RECIPIENT_NO_ACCESS)
    return client_side_may_message(req.practice, req.client, req.contact)


def may_client_start_conversation(req: StartRequest) -> Decision:
    """PM4 (+ EN3, PM6) for a client or contact starting a conversation."""
    if req.client is None:
        return deny(NO_RECIPIENTS)
    if not (d := client_side_may_message(req.practice, req.client, req.contact)):
        return d
    if not req.members:
        return deny(NO_RECIPIENTS)
    for facts in req.members:
        if not client_may_start_with(facts, req.client):
            return deny(NOT_ALLOWED_TO_START)
        if not (d := member_may_message(req.practice, facts.member)):
            return deny(RECIPIENT_MESSAGING_OFF)
    return ALLOW


@dataclass(frozen=True, slots=True)
class ConversationView:
    """What the policy needs to know about a conversation and the actor's side of it."""

    practice: Practice
    conversation: Conversation
    client: Client | None  # the conversation's client, None when team-only
    contact: Contact | None = None  # the conversation's contact, when a contact is its client side


def may_read_conversation_as_member(facts: MemberFacts, view: ConversationView) -> Decision:
    """A member reads a conversation they take part in, while they have access to its
    client (PM2 holds for the whole life of the conversation, not only its start)."""
    if not (d := may_use_messaging(view.practice)):
        return d
    m = facts.member
    if not m.active or m.practice_id != view.conversation.practice_id:
        return deny(INACTIVE)
    if not m.messaging_enabled:
        return deny(MEMBER_MESSAGING_OFF)  # EN2: only enabled members receive
    if view.conversation.participant(m.party) is None:
        return deny(NOT_PARTICIPANT)
    if view.client is not None and not has_client_access(facts, view.client):
        return deny(NO_CLIENT_ACCESS)
    return ALLOW


def may_read_conversation_as_client(party: Party, view: ConversationView) -> Decision:
    """A client or contact reads a conversation they take part in while EN3 holds for
    them (EN6: turning their messaging off ends reading at once)."""
    if view.client is None or view.conversation.participant(party) is None:
        return deny(NOT_PARTICIPANT)
    if party.kind is PartyKind.CONTACT and (view.contact is None or view.contact.id != party.id):
        return deny(NOT_PARTICIPANT)
    return client_side_may_message(view.practice, view.client, view.contact)


def may_reply_as_member(facts: MemberFacts, view: ConversationView) -> Decision:
    """PM1/PM2/PM8: a participant who may read may answer, with messaging on (EN1, EN2)."""
    if not (d := may_read_conversation_as_member(facts, view)):
        return d
    if not (d := member_may_message(view.practice, facts.member)):
        return d
    if view.client is not None:
        # Writing to a client who cannot read it is refused with the EN3 reason, so the
        # app can offer "Enable secure messaging" (EN5).
        return client_side_may_message(view.practice, view.client, view.contact)
    return ALLOW


def may_reply_as_client(party: Party, view: ConversationView) -> Decision:
    """PM5: once any member with access started a conversation with the client, the
    client may reply in it, and write again later, indefinitely (EN3 permitting)."""
    return may_read_conversation_as_client(party, view)


def may_remove_message(actor: Party, message: Message) -> Decision:
    """MS6: a team member removes a message they sent."""
    if actor.kind is not PartyKind.MEMBER or message.sender != actor:
        return deny(NOT_SENDER)
    if message.removed:
        return deny(ALREADY_REMOVED)
    return ALLOW


def may_set_away(member: Member) -> Decision:
    """AW1: any active team member controls their own away message."""
    return ALLOW if member.active else deny(INACTIVE)


# --- records (TR1, TR2, TR3, EX1, AN1) -------------------------------------------------------


def may_view_transcript(facts: MemberFacts, client: Client) -> Decision:
    """TR1: everyone with access to a client views their transcripts. TR3 (team-only
    conversations never appear) is a property of the transcript query."""
    return may_view_client(facts, client)


def may_write_chart_note(facts: MemberFacts, client: Client) -> Decision:
    """TR2: a member copies transcript messages into a new chart note on the client's
    record. A chart note is a write to the client's record, so the writers are the
    client's editors (`may_edit_client`): the account owner, practice managers,
    schedulers, and clinicians and supervisors with access to the client. Billers read
    transcripts (TR1) but do not write to the record. No access: `no_client_access`
    (services answer NotFound for it, PM7)."""
    return may_edit_client(facts, client)


def may_export(member: Member) -> Decision:
    """EX1: the account owner, and practice managers with `export_client_data`."""
    if not member.active:
        return deny(INACTIVE)
    if member.has(Role.ACCOUNT_OWNER):
        return ALLOW
    if member.has(Role.PRACTICE_MANAGER) and member.export_client_data:
        return ALLOW
    return deny(NOT_PERMITTED)


def may_send_announcement(practice: Practice, member: Member, *, to_all_clients: bool) -> Decision:
    """AN1 + PL2: plus plan; the account owner and practice managers to all active
    clients, a clinician to their own active clients."""
    if practice.plan is not Plan.PLUS:
        return deny(ANNOUNCEMENTS_PLAN)
    if not member.active:
        return deny(INACTIVE)
    if member.has(Role.ACCOUNT_OWNER) or member.has(Role.PRACTICE_MANAGER):
        return ALLOW
    if member.is_clinician and not to_all_clients:
        return ALLOW
    return deny(NOT_PERMITTED)


# --- the audit trail (RC1, issue 7) ----------------------------------------------------------


def may_view_audit_log(member: Member) -> Decision:
    """RC1 and issue 7's "Audit trail": the account owner and practice managers view and
    filter their practice's audit log (who, what, when, from where) and export it as
    CSV. `export_client_data` does not enter into it: the log holds ids, not health
    information. Everyone else in the practice is refused `not_permitted` (they know the
    log exists); client-side actors never reach this predicate (services answer them
    NotFound, PM7)."""
    if not member.active:
        return deny(INACTIVE)
    if member.has(Role.ACCOUNT_OWNER) or member.has(Role.PRACTICE_MANAGER):
        return ALLOW
    return deny(NOT_PERMITTED)
