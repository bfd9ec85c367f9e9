"""SPEC "People and plans" → "Access to a client", TR1, and the client/team editors.

Every row is one member (with grants and supervisees) looking at Chloe Client, whose
primary clinician is Carl Basic.
"""

import pytest

from confide.domain.entities import AccessLevel, Role
from confide.domain.policy import (
    has_client_access,
    may_create_client,
    may_edit_client,
    may_grant_client_access,
    may_view_client,
    may_view_transcript,
    sees_every_client,
)

from .people import (
    BETTY,
    BILL,
    CARL,
    CHLOE,
    DANIEL,
    ERIN,
    FRANK,
    GRACE,
    IRIS,
    NORA,
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
    but,
    facts,
    refused,
)

BILLING_CARL = but(CARL, access_level=AccessLevel.BILLING)  # Chloe's primary, billing level

# (who, has access to Chloe?)
ACCESS_TO_CHLOE = [
    pytest.param(facts(OLIVIA), True, id="account_owner"),
    pytest.param(facts(PAM), True, id="practice_manager"),
    pytest.param(facts(PETRA), True, id="practice_manager_with_export"),
    pytest.param(facts(BILL), True, id="biller"),
    pytest.param(facts(SALLY), True, id="scheduler"),
    pytest.param(facts(ERIN), True, id="clinician_entire_practice_not_primary"),
    pytest.param(facts(FRANK), True, id="clinician_full_client_list_not_primary"),
    pytest.param(facts(BILLING_CARL), True, id="clinician_billing_primary"),
    pytest.param(facts(BETTY, granted=[CHLOE]), True, id="clinician_billing_granted"),
    pytest.param(facts(BETTY), False, id="clinician_billing_neither"),
    pytest.param(facts(CARL), True, id="clinician_basic_primary"),
    pytest.param(facts(GRACE, granted=[CHLOE]), True, id="clinician_basic_granted"),
    pytest.param(facts(GRACE), False, id="clinician_basic_neither"),
    pytest.param(facts(GRACE, granted=[DANIEL]), False, id="clinician_basic_granted_other"),
    pytest.param(facts(SAM, supervises=[CARL]), True, id="supervisor_of_primary"),
    pytest.param(facts(SAM, granted=[CHLOE]), True, id="supervisor_granted"),
    pytest.param(facts(SAM), False, id="supervisor_neither"),
    pytest.param(facts(SAM, supervises=[BETTY]), False, id="supervisor_of_another_clinician"),
    pytest.param(facts(SUSAN, supervises=[CARL]), True, id="supervisor_clinician_supervisee"),
    pytest.param(facts(SUSAN, granted=[CHLOE]), True, id="supervisor_clinician_granted"),
    pytest.param(facts(SUSAN), False, id="supervisor_clinician_neither"),
    pytest.param(facts(but(CARL, active=False)), False, id="inactive_primary_clinician"),
    pytest.param(facts(but(OLIVIA, active=False)), False, id="inactive_account_owner"),
    pytest.param(facts(IRIS), False, id="inactive_full_client_list_clinician"),
    pytest.param(facts(OSCAR), False, id="other_practice_account_owner"),
    pytest.param(facts(OTTO), False, id="other_practice_full_client_list_clinician"),
    pytest.param(
        facts(OTTO, granted=[CHLOE]), False, id="other_practice_clinician_granted_our_client"
    ),
]


@pytest.mark.parametrize(("who", "expected"), ACCESS_TO_CHLOE)
def test_access_to_a_client_by_role_and_access_level(who, expected):
    assert has_client_access(who, CHLOE) is expected
    assert may_view_client(who, CHLOE) == (OK if expected else refused("no_client_access"))


@pytest.mark.parametrize(("who", "expected"), ACCESS_TO_CHLOE)
def test_tr1_everyone_with_access_to_a_client_views_their_transcripts(who, expected):
    assert may_view_transcript(who, CHLOE) == (OK if expected else refused("no_client_access"))


def test_access_supervisor_has_no_access_to_a_client_without_primary_clinician():
    assert may_view_client(facts(SAM, supervises=[CARL]), NORA) == refused("no_client_access")
    assert may_view_client(facts(PAM), NORA) == OK


def test_access_other_practice_client_is_refused_to_every_member_of_ours():
    for who in (OLIVIA, PAM, BILL, SALLY, ERIN, FRANK):
        assert may_view_client(facts(who), QUINN) == refused("no_client_access"), who.name
    assert may_view_client(facts(OTTO), QUINN) == OK


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(OLIVIA, True, id="account_owner"),
        pytest.param(PAM, True, id="practice_manager"),
        pytest.param(BILL, True, id="biller"),
        pytest.param(SALLY, True, id="scheduler"),
        pytest.param(ERIN, True, id="clinician_entire_practice"),
        pytest.param(FRANK, True, id="clinician_full_client_list"),
        pytest.param(BETTY, False, id="clinician_billing"),
        pytest.param(CARL, False, id="clinician_basic"),
        pytest.param(SAM, False, id="supervisor"),
        pytest.param(SUSAN, False, id="supervisor_clinician_basic"),
        pytest.param(IRIS, False, id="inactive_full_client_list"),
    ],
)
def test_access_sees_every_client_only_for_practice_wide_roles(who, expected):
    assert sees_every_client(who) is expected


# --- editing and creating clients (EN5 offers "Enable secure messaging" to editors) --------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(facts(OLIVIA), OK, id="account_owner"),
        pytest.param(facts(PAM), OK, id="practice_manager"),
        pytest.param(facts(SALLY), OK, id="scheduler"),
        pytest.param(facts(BILL), refused("not_permitted"), id="biller_sees_but_not_edits"),
        pytest.param(
            facts(but(BILL, roles=frozenset({Role.BILLER, Role.SCHEDULER}))),
            OK,
            id="biller_also_scheduler",
        ),
        pytest.param(facts(ERIN), OK, id="clinician_entire_practice"),
        pytest.param(facts(FRANK), OK, id="clinician_full_client_list"),
        pytest.param(facts(CARL), OK, id="clinician_basic_primary"),
        pytest.param(facts(GRACE, granted=[CHLOE]), OK, id="clinician_basic_granted"),
        pytest.param(facts(GRACE), refused("no_client_access"), id="clinician_basic_neither"),
        pytest.param(facts(SAM, supervises=[CARL]), OK, id="supervisor_of_primary"),
        pytest.param(facts(SAM), refused("no_client_access"), id="supervisor_neither"),
        pytest.param(facts(IRIS), refused("no_client_access"), id="inactive_member"),
        pytest.param(facts(OSCAR), refused("no_client_access"), id="other_practice_owner"),
    ],
)
def test_en5_may_edit_client_only_with_access_and_not_as_biller(who, expected):
    assert may_edit_client(who, CHLOE) == expected


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(OLIVIA, OK, id="account_owner"),
        pytest.param(PAM, OK, id="practice_manager"),
        pytest.param(SALLY, OK, id="scheduler"),
        pytest.param(ERIN, OK, id="clinician_entire_practice"),
        pytest.param(CARL, OK, id="clinician_basic"),
        pytest.param(SUSAN, OK, id="supervisor_clinician"),
        pytest.param(BILL, refused("not_permitted"), id="biller"),
        pytest.param(SAM, refused("not_permitted"), id="supervisor_only"),
        pytest.param(but(PAM, active=False), refused("inactive"), id="inactive_manager"),
    ],
)
def test_people_clients_are_created_by_owner_managers_schedulers_clinicians(who, expected):
    assert may_create_client(who) == expected


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(OLIVIA, OK, id="account_owner"),
        pytest.param(PAM, OK, id="practice_manager"),
        pytest.param(ERIN, refused("not_permitted"), id="clinician_entire_practice"),
        pytest.param(FRANK, refused("not_permitted"), id="clinician_full_client_list"),
        pytest.param(CARL, refused("not_permitted"), id="primary_clinician"),
        pytest.param(SAM, refused("not_permitted"), id="supervisor"),
        pytest.param(BILL, refused("not_permitted"), id="biller"),
        pytest.param(SALLY, refused("not_permitted"), id="scheduler"),
        pytest.param(but(PAM, active=False), refused("not_permitted"), id="inactive_manager"),
    ],
)
def test_access_grants_are_given_only_by_team_managers(who, expected):
    assert may_grant_client_access(who) == expected
