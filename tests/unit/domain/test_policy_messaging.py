"""SPEC "Enabling messaging", "Who may message whom", MS6, AW1, EX1, AN1, and the
practice-settings and team-management rules of "People and plans".

Unless a row says otherwise the practice is on `essential` with both switches on, and
every client and contact has portal access and secure messaging on (see people.py).
"""

import itertools
from datetime import timedelta

import pytest

from confide.domain.entities import AccessLevel, Plan, Role
from confide.domain.policy import (
    client_side_may_message,
    may_change_member,
    may_change_practice_settings,
    may_client_start_conversation,
    may_export,
    may_manage_team,
    may_member_start_conversation,
    may_read_conversation_as_client,
    may_read_conversation_as_member,
    may_remove_message,
    may_reply_as_client,
    may_reply_as_member,
    may_send_announcement,
    may_set_away,
    may_set_member_messaging,
    may_set_practice_switches,
    may_use_messaging,
    member_may_message,
    member_may_message_client,
    validate_roles,
)

from .people import (
    BETTY,
    BILL,
    CARL,
    CHLOE,
    DANIEL,
    DEREK,
    DORA,
    ENABLED_TEAM,
    ERIN,
    FRANK,
    GINA,
    GRACE,
    IRIS,
    NORA,
    NOW,
    OK,
    OLIVIA,
    OSCAR,
    OTTO,
    PAM,
    PETRA,
    QUINN,
    SALLY,
    SAM,
    SUSAN,
    SYSTEM,
    URSULA,
    but,
    conversation,
    facts,
    message,
    practice,
    refused,
    start,
    view,
)

CARL_CHLOE = conversation(CARL.party, CHLOE.party, about=CHLOE)
CARL_GINA = conversation(CARL.party, GINA.party, about=CHLOE)
CARL_PAM = conversation(CARL.party, PAM.party)  # team-only

# --- PL1 / PL2: plans ----------------------------------------------------------------------

# Each call is valid in every other respect: only the plan decides.
MESSAGING_CALLS = [
    pytest.param(lambda p: member_may_message(p, CARL), id="member_may_message"),
    pytest.param(lambda p: client_side_may_message(p, CHLOE), id="client_may_message"),
    pytest.param(lambda p: client_side_may_message(p, CHLOE, GINA), id="contact_may_message"),
    pytest.param(
        lambda p: may_member_start_conversation(facts(CARL), start(facts(PAM), on=p)),
        id="member_starts_team_conversation",
    ),
    pytest.param(
        lambda p: may_member_start_conversation(facts(CARL), start(on=p, about=CHLOE)),
        id="member_starts_client_conversation",
    ),
    pytest.param(
        lambda p: may_client_start_conversation(start(facts(CARL), on=p, about=CHLOE)),
        id="client_starts_conversation",
    ),
    pytest.param(
        lambda p: may_client_start_conversation(
            start(facts(CARL), on=p, about=CHLOE, contact_side=GINA)
        ),
        id="contact_starts_conversation",
    ),
    pytest.param(
        lambda p: may_read_conversation_as_member(facts(CARL), view(CARL_PAM, on=p)),
        id="member_reads_team_conversation",
    ),
    pytest.param(
        lambda p: may_read_conversation_as_member(facts(CARL), view(CARL_CHLOE, on=p, about=CHLOE)),
        id="member_reads_client_conversation",
    ),
    pytest.param(
        lambda p: may_reply_as_member(facts(CARL), view(CARL_CHLOE, on=p, about=CHLOE)),
        id="member_replies",
    ),
    pytest.param(
        lambda p: may_read_conversation_as_client(CHLOE.party, view(CARL_CHLOE, on=p, about=CHLOE)),
        id="client_reads",
    ),
    pytest.param(
        lambda p: may_reply_as_client(
            GINA.party, view(CARL_GINA, on=p, about=CHLOE, acting_contact=GINA)
        ),
        id="contact_replies",
    ),
]


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        pytest.param(Plan.STARTER, refused("plan_required"), id="starter"),
        pytest.param(Plan.ESSENTIAL, OK, id="essential"),
        pytest.param(Plan.PLUS, OK, id="plus"),
    ],
)
def test_pl1_secure_messaging_exists_on_essential_and_plus_only(plan, expected):
    assert may_use_messaging(practice(plan)) == expected


@pytest.mark.parametrize("call", MESSAGING_CALLS)
def test_pl1_starter_plan_refuses_every_messaging_predicate_with_plan_required(call):
    assert call(practice(Plan.STARTER)) == refused("plan_required")


@pytest.mark.parametrize("plan", [Plan.ESSENTIAL, Plan.PLUS])
@pytest.mark.parametrize("call", MESSAGING_CALLS)
def test_pl1_the_same_messaging_calls_are_allowed_on_essential_and_plus(call, plan):
    assert call(practice(plan)) == OK


def test_pl1_starter_plan_cannot_switch_messaging_on():
    starter = practice(Plan.STARTER, team=False, clients=False)
    assert may_set_practice_switches(starter, team=True, clients=True) == refused("plan_required")


# --- EN1: practice switches ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("team", "clients", "expected"),
    [
        pytest.param(True, True, OK, id="team_on_clients_on"),
        pytest.param(True, False, OK, id="team_on_clients_off"),
        pytest.param(False, False, OK, id="team_off_clients_off"),
        pytest.param(False, True, refused("team_messaging_off"), id="clients_on_without_team"),
    ],
)
def test_en1_client_switch_needs_team_switch(team, clients, expected):
    before = practice(team=False, clients=False)
    assert may_set_practice_switches(before, team=team, clients=clients) == expected


def test_en1_team_switch_off_stops_members_and_clients_even_if_client_switch_left_on():
    inconsistent = practice(team=False, clients=True)
    assert member_may_message(inconsistent, CARL) == refused("team_messaging_off")
    assert client_side_may_message(inconsistent, CHLOE) == refused("practice_client_messaging_off")
    assert may_member_start_conversation(
        facts(CARL), start(facts(PAM), on=inconsistent)
    ) == refused("team_messaging_off")


def test_en1_client_switch_off_keeps_team_messaging():
    team_only = practice(clients=False)
    assert may_member_start_conversation(facts(CARL), start(facts(PAM), on=team_only)) == OK
    assert may_member_start_conversation(facts(CARL), start(on=team_only, about=CHLOE)) == refused(
        "practice_client_messaging_off"
    )
    assert may_reply_as_member(facts(CARL), view(CARL_PAM, on=team_only)) == OK
    assert may_reply_as_member(facts(CARL), view(CARL_CHLOE, on=team_only, about=CHLOE)) == refused(
        "practice_client_messaging_off"
    )


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(OLIVIA, OK, id="account_owner"),
        pytest.param(PAM, OK, id="practice_manager"),
        pytest.param(ERIN, OK, id="clinician_entire_practice"),
        pytest.param(
            but(SUSAN, access_level=AccessLevel.ENTIRE_PRACTICE),
            OK,
            id="supervisor_clinician_entire_practice",
        ),
        pytest.param(FRANK, refused("not_permitted"), id="clinician_full_client_list"),
        pytest.param(BETTY, refused("not_permitted"), id="clinician_billing"),
        pytest.param(CARL, refused("not_permitted"), id="clinician_basic"),
        pytest.param(SAM, refused("not_permitted"), id="supervisor"),
        pytest.param(BILL, refused("not_permitted"), id="biller"),
        pytest.param(SALLY, refused("not_permitted"), id="scheduler"),
        pytest.param(but(OLIVIA, active=False), refused("inactive"), id="inactive_owner"),
        pytest.param(but(ERIN, active=False), refused("inactive"), id="inactive_entire"),
    ],
)
def test_en1_practice_settings_are_changed_by_owner_managers_and_entire_practice(who, expected):
    assert may_change_practice_settings(who) == expected


# --- EN2: each member's "enabled for secure messaging" box --------------------------------


@pytest.mark.parametrize(
    ("who", "on", "expected"),
    [
        pytest.param(CARL, practice(), OK, id="enabled_member"),
        pytest.param(DORA, practice(), refused("member_messaging_disabled"), id="box_off"),
        pytest.param(IRIS, practice(), refused("inactive"), id="inactive_member"),
        pytest.param(
            CARL, practice(team=False, clients=False), refused("team_messaging_off"), id="team_off"
        ),
    ],
)
def test_en2_only_enabled_members_may_message(who, on, expected):
    assert member_may_message(on, who) == expected


@pytest.mark.parametrize(
    "recipient",
    [pytest.param(DORA, id="box_off"), pytest.param(IRIS, id="inactive")],
)
def test_en2_disabled_members_do_not_receive(recipient):
    assert may_member_start_conversation(facts(CARL), start(facts(recipient))) == refused(
        "recipient_messaging_disabled"
    )
    assert may_member_start_conversation(
        facts(CARL), start(facts(PAM), facts(recipient))
    ) == refused("recipient_messaging_disabled")


def test_en2_client_cannot_start_with_primary_clinician_whose_box_is_off():
    assert may_client_start_conversation(
        start(facts(but(CARL, messaging_enabled=False)), about=CHLOE)
    ) == refused("recipient_messaging_disabled")


def test_en2_member_whose_box_is_off_cannot_reply():
    dora_pam = conversation(DORA.party, PAM.party)
    assert may_reply_as_member(facts(DORA), view(dora_pam)) == refused("member_messaging_disabled")


@pytest.mark.parametrize(
    ("actor", "target", "expected"),
    [
        pytest.param(OLIVIA, CARL, OK, id="owner_changes_clinician"),
        pytest.param(OLIVIA, PAM, OK, id="owner_changes_manager"),
        pytest.param(OLIVIA, OLIVIA, OK, id="owner_changes_self"),
        pytest.param(OLIVIA, DORA, OK, id="owner_re_enables_disabled_member"),
        pytest.param(PAM, CARL, OK, id="manager_changes_clinician"),
        pytest.param(PAM, PETRA, OK, id="manager_changes_manager"),
        pytest.param(PAM, OLIVIA, refused("not_permitted"), id="manager_cannot_change_owner"),
        pytest.param(ERIN, CARL, OK, id="entire_practice_changes_clinician"),
        pytest.param(ERIN, OLIVIA, refused("not_permitted"), id="entire_cannot_change_owner"),
        pytest.param(FRANK, CARL, refused("not_permitted"), id="full_client_list"),
        pytest.param(CARL, CARL, refused("not_permitted"), id="basic_clinician_own_box"),
        pytest.param(BILL, CARL, refused("not_permitted"), id="biller"),
        pytest.param(SALLY, CARL, refused("not_permitted"), id="scheduler"),
        pytest.param(SAM, CARL, refused("not_permitted"), id="supervisor_of_target"),
        pytest.param(but(PAM, active=False), CARL, refused("inactive"), id="inactive_manager"),
        pytest.param(but(OLIVIA, active=False), CARL, refused("inactive"), id="inactive_owner"),
    ],
)
def test_en2_messaging_box_is_set_by_owner_for_anyone_and_settings_editors_for_others(
    actor, target, expected
):
    assert may_set_member_messaging(actor, target) == expected


# --- EN3 / EN6: clients and contacts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "who", "as_contact", "expected"),
    [
        pytest.param(practice(), CHLOE, None, OK, id="client_all_on"),
        pytest.param(
            practice(clients=False),
            CHLOE,
            None,
            refused("practice_client_messaging_off"),
            id="client_practice_switch_off",
        ),
        pytest.param(
            practice(team=False, clients=False),
            CHLOE,
            None,
            refused("practice_client_messaging_off"),
            id="client_team_switch_off",
        ),
        pytest.param(
            practice(),
            but(CHLOE, portal_access=False),
            None,
            refused("no_portal_access"),
            id="client_no_portal_access",
        ),
        pytest.param(
            practice(),
            but(CHLOE, messaging_enabled=False),
            None,
            refused("client_messaging_off"),
            id="client_own_box_off",
        ),
        pytest.param(
            practice(), but(CHLOE, active=False), None, refused("inactive"), id="client_inactive"
        ),
        pytest.param(practice(), CHLOE, GINA, OK, id="contact_all_on"),
        pytest.param(
            practice(clients=False),
            CHLOE,
            GINA,
            refused("practice_client_messaging_off"),
            id="contact_practice_switch_off",
        ),
        pytest.param(
            practice(),
            CHLOE,
            but(GINA, portal_access=False),
            refused("no_portal_access"),
            id="contact_no_portal_access",
        ),
        pytest.param(
            practice(),
            CHLOE,
            but(GINA, messaging_enabled=False),
            refused("client_messaging_off"),
            id="contact_own_box_off",
        ),
        pytest.param(
            practice(),
            but(CHLOE, active=False),
            GINA,
            refused("inactive"),
            id="contact_of_inactive_client",
        ),
        # "their own box": a contact's portal access and box are the contact's.
        pytest.param(
            practice(),
            but(CHLOE, portal_access=False, messaging_enabled=False),
            GINA,
            OK,
            id="contact_own_boxes_on_client_boxes_off",
        ),
    ],
)
def test_en3_client_side_may_message_needs_switch_portal_and_own_box(on, who, as_contact, expected):
    assert client_side_may_message(on, who, as_contact) == expected


@pytest.mark.parametrize(
    ("turned_off", "code"),
    [
        pytest.param({"messaging_enabled": False}, "client_messaging_off", id="messaging_off"),
        pytest.param({"portal_access": False}, "no_portal_access", id="portal_off"),
    ],
)
def test_en6_client_whose_messaging_is_turned_off_can_no_longer_read_or_send(turned_off, code):
    chloe_off = but(CHLOE, **turned_off)
    assert may_read_conversation_as_client(
        CHLOE.party, view(CARL_CHLOE, about=chloe_off)
    ) == refused(code)
    assert may_reply_as_client(CHLOE.party, view(CARL_CHLOE, about=chloe_off)) == refused(code)
    assert may_client_start_conversation(start(facts(CARL), about=chloe_off)) == refused(code)


def test_en6_history_stays_readable_for_the_team_after_client_messaging_is_off():
    chloe_off = but(CHLOE, messaging_enabled=False)
    assert may_read_conversation_as_member(facts(CARL), view(CARL_CHLOE, about=chloe_off)) == OK


def test_en6_contact_whose_messaging_is_turned_off_can_no_longer_read():
    gina_off = but(GINA, messaging_enabled=False)
    assert may_read_conversation_as_client(
        GINA.party, view(CARL_GINA, about=CHLOE, acting_contact=gina_off)
    ) == refused("client_messaging_off")


# --- EN5: starting with a client whose messaging is off ------------------------------------


@pytest.mark.parametrize(
    ("chloe", "code"),
    [
        pytest.param(but(CHLOE, messaging_enabled=False), "client_messaging_off", id="box_off"),
        pytest.param(but(CHLOE, portal_access=False), "no_portal_access", id="no_portal"),
        pytest.param(
            but(CHLOE, portal_access=False, messaging_enabled=False),
            "no_portal_access",
            id="both_off",
        ),
    ],
)
def test_en5_member_starting_with_client_whose_messaging_is_off_gets_an_actionable_code(
    chloe, code
):
    assert may_member_start_conversation(facts(CARL), start(about=chloe)) == refused(code)
    assert may_member_start_conversation(facts(BILL), start(about=chloe)) == refused(code)


def test_en5_contact_whose_messaging_is_off_gets_the_same_code():
    assert may_member_start_conversation(
        facts(CARL), start(about=CHLOE, contact_side=but(GINA, messaging_enabled=False))
    ) == refused("client_messaging_off")


# --- PM1: any two enabled members -----------------------------------------------------------


def _first(m):
    return m.name.split()[0].lower()


@pytest.mark.parametrize(
    ("starter", "recipient"),
    [
        pytest.param(a, b, id=f"{_first(a)}_to_{_first(b)}")
        for a, b in itertools.permutations(ENABLED_TEAM, 2)
    ],
)
def test_pm1_any_two_enabled_members_may_converse_whatever_their_roles(starter, recipient):
    assert may_member_start_conversation(facts(starter), start(facts(recipient))) == OK


def test_pm1_a_group_of_enabled_members_may_converse():
    group = start(facts(PAM), facts(BILL), facts(SAM), facts(ERIN))
    assert may_member_start_conversation(facts(CARL), group) == OK


def test_pm1_starting_with_nobody_is_refused():
    assert may_member_start_conversation(facts(CARL), start()) == refused("no_recipients")


def test_pm1_disabled_starter_is_refused():
    assert may_member_start_conversation(facts(DORA), start(facts(PAM))) == refused(
        "member_messaging_disabled"
    )
    assert may_member_start_conversation(facts(IRIS), start(facts(PAM))) == refused("inactive")


@pytest.mark.parametrize(
    ("starter", "recipient"),
    [
        pytest.param(CARL, OSCAR, id="recipient_from_other_practice"),
        pytest.param(OSCAR, CARL, id="starter_from_other_practice"),
    ],
)
def test_pm7_no_team_conversation_across_practices(starter, recipient):
    assert not may_member_start_conversation(facts(starter), start(facts(recipient)))


# --- PM2 / PM3: members messaging clients ---------------------------------------------------


@pytest.mark.parametrize(
    ("who", "about", "expected"),
    [
        pytest.param(facts(CARL), CHLOE, OK, id="basic_primary"),
        pytest.param(facts(CARL), DANIEL, refused("no_client_access"), id="basic_not_assigned"),
        pytest.param(facts(CARL), NORA, refused("no_client_access"), id="basic_no_primary"),
        pytest.param(facts(GRACE, granted=[DANIEL]), DANIEL, OK, id="basic_granted"),
        pytest.param(facts(BETTY), DANIEL, OK, id="billing_primary"),
        pytest.param(facts(BETTY), CHLOE, refused("no_client_access"), id="billing_not_assigned"),
        pytest.param(facts(FRANK), DANIEL, OK, id="full_client_list"),
        pytest.param(facts(ERIN), NORA, OK, id="entire_practice"),
        pytest.param(facts(SAM, supervises=[CARL]), CHLOE, OK, id="supervisor_of_primary"),
        pytest.param(facts(SAM), CHLOE, refused("no_client_access"), id="supervisor_no_access"),
    ],
)
def test_pm2_clinician_may_message_a_client_only_with_access(who, about, expected):
    assert member_may_message_client(who, about) == expected
    assert may_member_start_conversation(who, start(about=about)) == expected


def test_pm2_member_of_another_practice_never_reaches_a_client():
    assert member_may_message_client(facts(OTTO), CHLOE) == refused("no_client_access")
    assert may_member_start_conversation(facts(OTTO), start(about=CHLOE)) == refused(
        "other_practice"
    )


def test_pm2_team_recipients_of_a_client_conversation_need_access_too():
    assert may_member_start_conversation(facts(CARL), start(facts(GRACE), about=CHLOE)) == refused(
        "recipient_no_client_access"
    )
    assert (
        may_member_start_conversation(
            facts(CARL),
            start(facts(GRACE, granted=[CHLOE]), facts(SAM, supervises=[CARL]), about=CHLOE),
        )
        == OK
    )


@pytest.mark.parametrize(
    "who",
    [
        pytest.param(BILL, id="biller"),
        pytest.param(SALLY, id="scheduler"),
        pytest.param(PAM, id="practice_manager"),
        pytest.param(OLIVIA, id="account_owner"),
    ],
)
@pytest.mark.parametrize(
    "about",
    [
        pytest.param(CHLOE, id="chloe"),
        pytest.param(DANIEL, id="daniel"),
        pytest.param(NORA, id="nora_without_primary"),
    ],
)
def test_pm3_billers_schedulers_managers_and_owner_message_any_client(who, about):
    assert member_may_message_client(facts(who), about) == OK
    assert may_member_start_conversation(facts(who), start(about=about)) == OK


# --- PM4: who a client may START a conversation with --------------------------------------

SUPERVISOR_BILLER = but(SAM, roles=frozenset({Role.SUPERVISOR, Role.BILLER}))
SUPERVISOR_SCHEDULER = but(SAM, roles=frozenset({Role.SUPERVISOR, Role.SCHEDULER}))

PM4_RECIPIENTS = [
    pytest.param(facts(CARL), OK, id="primary_clinician"),
    pytest.param(facts(PAM), OK, id="practice_manager"),
    pytest.param(facts(PETRA), OK, id="practice_manager_with_export"),
    pytest.param(facts(BILL), OK, id="biller"),
    pytest.param(facts(SALLY), OK, id="scheduler"),
    pytest.param(facts(SAM, supervises=[CARL]), OK, id="supervisor_of_primary"),
    pytest.param(facts(SAM, granted=[CHLOE]), OK, id="supervisor_granted"),
    pytest.param(facts(SUSAN, supervises=[CARL]), OK, id="supervisor_clinician_with_access"),
    pytest.param(facts(SUPERVISOR_BILLER), OK, id="supervisor_also_biller"),
    pytest.param(facts(SUPERVISOR_SCHEDULER), OK, id="supervisor_also_scheduler"),
    pytest.param(facts(FRANK), refused("recipient_not_allowed"), id="full_client_list_clinician"),
    pytest.param(facts(ERIN), refused("recipient_not_allowed"), id="entire_practice_clinician"),
    pytest.param(
        facts(GRACE, granted=[CHLOE]), refused("recipient_not_allowed"), id="granted_clinician"
    ),
    pytest.param(facts(BETTY), refused("recipient_not_allowed"), id="unassigned_clinician"),
    pytest.param(facts(OLIVIA), refused("recipient_not_allowed"), id="account_owner_only"),
    pytest.param(facts(SAM), refused("recipient_not_allowed"), id="supervisor_without_access"),
    pytest.param(
        facts(SAM, supervises=[BETTY]),
        refused("recipient_not_allowed"),
        id="supervisor_of_another_clinician",
    ),
    pytest.param(
        facts(SUSAN), refused("recipient_not_allowed"), id="supervisor_clinician_no_access"
    ),
    pytest.param(facts(IRIS), refused("recipient_not_allowed"), id="inactive_member"),
    pytest.param(facts(OTTO), refused("recipient_not_allowed"), id="other_practice_member"),
]


@pytest.mark.parametrize(("recipient", "expected"), PM4_RECIPIENTS)
def test_pm4_client_may_start_only_with_primary_managers_billers_schedulers_supervisors(
    recipient, expected
):
    assert may_client_start_conversation(start(recipient, about=CHLOE)) == expected


@pytest.mark.parametrize(("recipient", "expected"), PM4_RECIPIENTS)
def test_pm4_contact_may_start_with_the_same_people_as_their_client(recipient, expected):
    assert (
        may_client_start_conversation(start(recipient, about=CHLOE, contact_side=GINA)) == expected
    )


def test_pm4_client_cannot_start_with_unassigned_clinician():
    # Frank sees every client (full_client_list), yet Chloe may not start with him.
    assert member_may_message_client(facts(FRANK), CHLOE) == OK
    assert may_client_start_conversation(start(facts(FRANK), about=CHLOE)) == refused(
        "recipient_not_allowed"
    )


def test_pm4_account_owner_who_is_the_primary_clinician_may_be_started_with():
    owner_clinician = but(
        OLIVIA,
        roles=frozenset({Role.ACCOUNT_OWNER, Role.CLINICIAN}),
        access_level=AccessLevel.BASIC,
    )
    olivias_client = but(CHLOE, primary_clinician_id=OLIVIA.id)
    assert may_client_start_conversation(start(facts(owner_clinician), about=olivias_client)) == OK


def test_pm4_one_refused_recipient_refuses_the_whole_group():
    assert may_client_start_conversation(
        start(facts(CARL), facts(PAM), facts(FRANK), about=CHLOE)
    ) == refused("recipient_not_allowed")
    assert may_client_start_conversation(start(facts(CARL), facts(PAM), about=CHLOE)) == OK


def test_pm4_client_must_name_someone():
    assert may_client_start_conversation(start(about=CHLOE)) == refused("no_recipients")
    assert may_client_start_conversation(start(facts(CARL))) == refused("no_recipients")


# --- PM5: replying in a conversation a member started -------------------------------------


@pytest.mark.parametrize(
    "starter",
    [
        pytest.param(facts(FRANK), id="full_client_list_clinician"),
        pytest.param(facts(ERIN), id="entire_practice_clinician"),
        pytest.param(facts(GRACE, granted=[CHLOE]), id="granted_clinician"),
        pytest.param(facts(OLIVIA), id="account_owner"),
    ],
)
def test_pm5_client_may_reply_when_a_member_she_cannot_start_with_started(starter):
    who = starter.member
    assert may_client_start_conversation(start(starter, about=CHLOE)) == refused(
        "recipient_not_allowed"
    )
    assert may_member_start_conversation(starter, start(about=CHLOE)) == OK
    conv = conversation(who.party, CHLOE.party, about=CHLOE, started_by=who.party)
    assert may_reply_as_client(CHLOE.party, view(conv, about=CHLOE)) == OK


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(timedelta(0), id="at_once"),
        pytest.param(timedelta(days=2), id="two_days"),
        pytest.param(timedelta(days=400), id="over_a_year"),
        pytest.param(timedelta(days=3650), id="ten_years"),
    ],
)
def test_pm5_client_may_write_again_much_later(later):
    conv = conversation(
        FRANK.party,
        CHLOE.party,
        about=CHLOE,
        started_by=FRANK.party,
        last_activity_at=NOW - later,
    )
    assert may_reply_as_client(CHLOE.party, view(conv, about=CHLOE)) == OK
    assert may_reply_as_member(facts(FRANK), view(conv, about=CHLOE)) == OK


def test_pm5_contact_may_reply_when_a_non_primary_clinician_started():
    conv = conversation(FRANK.party, GINA.party, about=CHLOE, started_by=FRANK.party)
    assert may_reply_as_client(GINA.party, view(conv, about=CHLOE, acting_contact=GINA)) == OK


# --- PM6: one client per conversation; contacts act for their client ----------------------


def test_pm6_contact_starts_a_conversation_on_behalf_of_their_client():
    assert may_client_start_conversation(start(facts(CARL), about=CHLOE, contact_side=GINA)) == OK
    assert may_member_start_conversation(facts(CARL), start(about=CHLOE, contact_side=GINA)) == OK


@pytest.mark.parametrize(
    ("party", "conv", "acting_contact"),
    [
        pytest.param(CHLOE.party, CARL_GINA, None, id="client_not_in_contacts_conversation"),
        pytest.param(GINA.party, CARL_CHLOE, GINA, id="contact_not_in_clients_conversation"),
        pytest.param(DANIEL.party, CARL_CHLOE, None, id="another_client"),
        pytest.param(DEREK.party, CARL_GINA, DEREK, id="another_clients_contact"),
        pytest.param(GINA.party, CARL_GINA, None, id="contact_without_contact_facts"),
        pytest.param(GINA.party, CARL_GINA, DEREK, id="contact_facts_of_someone_else"),
    ],
)
def test_pm6_only_the_client_or_contact_in_the_conversation_reads_it(party, conv, acting_contact):
    decision = may_read_conversation_as_client(
        party, view(conv, about=CHLOE, acting_contact=acting_contact)
    )
    assert decision == refused("not_participant")
    assert may_reply_as_client(
        party, view(conv, about=CHLOE, acting_contact=acting_contact)
    ) == refused("not_participant")


def test_pm6_team_only_conversation_is_never_read_by_a_client():
    assert may_read_conversation_as_client(CHLOE.party, view(CARL_PAM)) == refused(
        "not_participant"
    )


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: client_side_may_message(practice(), CHLOE, c), id="may_message"),
        pytest.param(
            lambda c: may_client_start_conversation(start(facts(PAM), about=CHLOE, contact_side=c)),
            id="contact_starts",
        ),
        pytest.param(
            lambda c: may_member_start_conversation(facts(PAM), start(about=CHLOE, contact_side=c)),
            id="member_starts",
        ),
    ],
)
@pytest.mark.parametrize(
    "stranger",
    [
        pytest.param(DEREK, id="daniels_contact"),
        pytest.param(URSULA, id="other_practice_contact"),
    ],
)
def test_pm6_contact_of_another_client_cannot_converse_about_this_client(call, stranger):
    assert not call(stranger)


# --- PM7 / revocation: members outside the conversation or without access -----------------


@pytest.mark.parametrize(
    ("who", "conv", "about", "expected"),
    [
        pytest.param(facts(CARL), CARL_CHLOE, CHLOE, OK, id="participant_with_access"),
        pytest.param(facts(CARL), CARL_PAM, None, OK, id="participant_team_only"),
        pytest.param(
            facts(PAM), CARL_CHLOE, CHLOE, refused("not_participant"), id="manager_not_participant"
        ),
        pytest.param(
            facts(OLIVIA), CARL_PAM, None, refused("not_participant"), id="owner_not_participant"
        ),
        pytest.param(
            facts(GRACE),
            conversation(GRACE.party, CHLOE.party, about=CHLOE),
            CHLOE,
            refused("no_client_access"),
            id="grant_withdrawn",
        ),
        pytest.param(
            facts(SAM),
            conversation(SAM.party, CHLOE.party, about=CHLOE),
            CHLOE,
            refused("no_client_access"),
            id="supervision_ended",
        ),
        pytest.param(
            facts(but(CARL, active=False)),
            CARL_CHLOE,
            CHLOE,
            refused("inactive"),
            id="deactivated_participant",
        ),
        # Services answer every one of these with the same NotFound (PM7).
        pytest.param(
            facts(OSCAR),
            conversation(OSCAR.party, CHLOE.party, about=CHLOE),
            CHLOE,
            refused("inactive"),
            id="other_practice_member_listed",
        ),
    ],
)
def test_pm7_member_reads_and_replies_only_as_participant_with_access(who, conv, about, expected):
    assert may_read_conversation_as_member(who, view(conv, about=about)) == expected
    assert may_reply_as_member(who, view(conv, about=about)) == expected


def test_pm7_other_practice_client_is_never_reached():
    assert may_member_start_conversation(facts(OLIVIA), start(about=QUINN)) == refused(
        "no_client_access"
    )


def test_pm8_participant_with_messaging_on_may_answer_any_existing_conversation():
    assert may_reply_as_member(facts(CARL), view(CARL_CHLOE, about=CHLOE)) == OK
    assert may_reply_as_member(facts(PAM), view(CARL_PAM)) == OK


# --- MS6: removing a message -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "msg", "expected"),
    [
        pytest.param(CARL.party, message(CARL.party), OK, id="member_sender"),
        pytest.param(
            PAM.party, message(CARL.party), refused("not_sender"), id="other_member_even_manager"
        ),
        pytest.param(
            OLIVIA.party, message(CARL.party), refused("not_sender"), id="account_owner_not_sender"
        ),
        pytest.param(
            CARL.party,
            message(CARL.party, removed_by=CARL.party),
            refused("already_removed"),
            id="not_twice",
        ),
        pytest.param(
            CHLOE.party, message(CHLOE.party), refused("not_sender"), id="client_own_message"
        ),
        pytest.param(GINA.party, message(GINA.party), refused("not_sender"), id="contact_own"),
        pytest.param(
            CHLOE.party, message(CARL.party), refused("not_sender"), id="client_members_message"
        ),
        pytest.param(SYSTEM, message(SYSTEM), refused("not_sender"), id="system"),
    ],
)
def test_ms6_only_the_member_who_sent_a_message_removes_it_once(actor, msg, expected):
    assert may_remove_message(actor, msg) == expected


# --- AW1: away message -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [pytest.param(m, OK, id=_first(m)) for m in ENABLED_TEAM]
    + [
        pytest.param(DORA, OK, id="dora_box_off"),
        pytest.param(IRIS, refused("inactive"), id="iris_inactive"),
    ],
)
def test_aw1_every_active_member_switches_their_away_message(who, expected):
    assert may_set_away(who) == expected


# --- EX1: data export ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(OLIVIA, OK, id="account_owner"),
        pytest.param(PETRA, OK, id="manager_with_export_client_data"),
        pytest.param(PAM, refused("not_permitted"), id="manager_without_export_client_data"),
        pytest.param(
            but(BILL, export_client_data=True), refused("not_permitted"), id="biller_with_flag"
        ),
        pytest.param(
            but(ERIN, export_client_data=True),
            refused("not_permitted"),
            id="entire_practice_with_flag",
        ),
        pytest.param(FRANK, refused("not_permitted"), id="clinician_full_client_list"),
        pytest.param(CARL, refused("not_permitted"), id="clinician_basic"),
        pytest.param(SAM, refused("not_permitted"), id="supervisor"),
        pytest.param(SALLY, refused("not_permitted"), id="scheduler"),
        pytest.param(but(OLIVIA, active=False), refused("inactive"), id="inactive_owner"),
        pytest.param(but(PETRA, active=False), refused("inactive"), id="inactive_exporter"),
    ],
)
def test_ex1_owner_and_managers_with_export_client_data_export(who, expected):
    assert may_export(who) == expected


# --- AN1 / PL2: announcements ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "who", "to_all", "expected"),
    [
        pytest.param(Plan.PLUS, OLIVIA, True, OK, id="owner_to_all"),
        pytest.param(Plan.PLUS, PAM, True, OK, id="manager_to_all"),
        pytest.param(Plan.PLUS, PAM, False, OK, id="manager_to_own"),
        pytest.param(Plan.PLUS, CARL, False, OK, id="clinician_to_own"),
        pytest.param(Plan.PLUS, SUSAN, False, OK, id="supervisor_clinician_to_own"),
        pytest.param(Plan.PLUS, CARL, True, refused("not_permitted"), id="clinician_to_all"),
        pytest.param(Plan.PLUS, ERIN, True, refused("not_permitted"), id="entire_to_all"),
        pytest.param(Plan.PLUS, SAM, False, refused("not_permitted"), id="supervisor_only"),
        pytest.param(Plan.PLUS, BILL, True, refused("not_permitted"), id="biller_to_all"),
        pytest.param(Plan.PLUS, SALLY, False, refused("not_permitted"), id="scheduler"),
        pytest.param(
            Plan.PLUS, but(PAM, active=False), True, refused("inactive"), id="inactive_manager"
        ),
        pytest.param(Plan.ESSENTIAL, OLIVIA, True, refused("plan_required"), id="pl2_essential"),
        pytest.param(Plan.ESSENTIAL, CARL, False, refused("plan_required"), id="pl2_ess_clin"),
        pytest.param(Plan.STARTER, OLIVIA, True, refused("plan_required"), id="pl2_starter"),
    ],
)
def test_an1_owner_and_managers_announce_to_all_clinicians_to_their_own(
    plan, who, to_all, expected
):
    assert may_send_announcement(practice(plan), who, to_all_clients=to_all) == expected


# --- team management ("People and plans") ----------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(OLIVIA, OK, id="account_owner"),
        pytest.param(PAM, OK, id="practice_manager"),
        pytest.param(PETRA, OK, id="practice_manager_with_export"),
        pytest.param(ERIN, refused("not_permitted"), id="clinician_entire_practice"),
        pytest.param(FRANK, refused("not_permitted"), id="clinician_full_client_list"),
        pytest.param(CARL, refused("not_permitted"), id="clinician_basic"),
        pytest.param(SAM, refused("not_permitted"), id="supervisor"),
        pytest.param(BILL, refused("not_permitted"), id="biller"),
        pytest.param(SALLY, refused("not_permitted"), id="scheduler"),
        pytest.param(but(PAM, active=False), refused("not_permitted"), id="inactive_manager"),
        pytest.param(but(OLIVIA, active=False), refused("not_permitted"), id="inactive_owner"),
    ],
)
def test_people_only_owner_and_practice_managers_manage_the_team(who, expected):
    assert may_manage_team(who) == expected


@pytest.mark.parametrize(
    ("actor", "target", "expected"),
    [
        pytest.param(OLIVIA, CARL, OK, id="owner_changes_clinician"),
        pytest.param(OLIVIA, PAM, OK, id="owner_changes_manager"),
        pytest.param(OLIVIA, OLIVIA, OK, id="owner_changes_self"),
        pytest.param(PAM, CARL, OK, id="manager_changes_clinician"),
        pytest.param(PAM, PETRA, OK, id="manager_changes_manager"),
        pytest.param(PAM, PAM, OK, id="manager_changes_self"),
        pytest.param(PAM, OLIVIA, refused("not_permitted"), id="manager_cannot_demote_owner"),
        pytest.param(ERIN, CARL, refused("not_permitted"), id="entire_practice_clinician"),
        pytest.param(SAM, CARL, refused("not_permitted"), id="supervisor_of_target"),
        pytest.param(BILL, CARL, refused("not_permitted"), id="biller"),
        pytest.param(
            but(OLIVIA, active=False), CARL, refused("not_permitted"), id="inactive_owner"
        ),
    ],
)
def test_people_only_owner_and_managers_change_members_and_never_the_owner(actor, target, expected):
    assert may_change_member(actor, target) == expected


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: may_change_member(OSCAR, CARL), id="other_owner_changes_member"),
        pytest.param(lambda: may_change_member(PAM, OTTO), id="manager_changes_other_member"),
        pytest.param(
            lambda: may_set_member_messaging(OSCAR, CARL), id="other_owner_sets_messaging_box"
        ),
    ],
)
def test_people_team_managers_cannot_change_another_practices_members(call):
    assert not call()


@pytest.mark.parametrize(
    ("roles", "access", "expected"),
    [
        pytest.param([Role.ACCOUNT_OWNER], None, OK, id="owner"),
        pytest.param([Role.CLINICIAN], AccessLevel.BASIC, OK, id="clinician_basic"),
        pytest.param(
            [Role.SUPERVISOR, Role.CLINICIAN],
            AccessLevel.FULL_CLIENT_LIST,
            OK,
            id="supervisor_clinician",
        ),
        pytest.param(
            [Role.PRACTICE_MANAGER, Role.BILLER, Role.SCHEDULER], None, OK, id="office_roles"
        ),
        pytest.param(
            [Role.ACCOUNT_OWNER, Role.CLINICIAN],
            AccessLevel.ENTIRE_PRACTICE,
            OK,
            id="owner_clinician",
        ),
        pytest.param([], None, refused("roles_required"), id="no_roles"),
        pytest.param([], AccessLevel.BASIC, refused("roles_required"), id="only_access_level"),
        pytest.param(
            [Role.CLINICIAN], None, refused("access_level_required"), id="clinician_no_level"
        ),
        pytest.param(
            [Role.SUPERVISOR, Role.CLINICIAN],
            None,
            refused("access_level_required"),
            id="supervisor_clinician_no_level",
        ),
        pytest.param(
            [Role.BILLER],
            AccessLevel.BASIC,
            refused("access_level_without_clinician"),
            id="level_without_clinician",
        ),
        pytest.param(
            [Role.SUPERVISOR],
            AccessLevel.FULL_CLIENT_LIST,
            refused("access_level_without_clinician"),
            id="supervisor_with_level",
        ),
    ],
)
def test_people_roles_combine_with_one_clinician_role_and_its_access_level(roles, access, expected):
    assert validate_roles(roles, access) == expected
