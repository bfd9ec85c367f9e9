"""SPEC TR1, TR2: who reads a client's transcript and who copies messages from it into a
chart note on the client's record.

Every row is one member looking at Chloe Client (primary clinician Carl Basic). A chart
note writes to the client's record, so its writers are the client's editors; the
readers are everyone with access (TR1). Records are not messaging: the EN2 box and the
plan do not enter into it (no practice is even passed in).
"""

import pytest

from confide.domain.entities import Role
from confide.domain.policy import may_view_transcript, may_write_chart_note

from .people import (
    BETTY,
    BILL,
    CARL,
    CHLOE,
    DANIEL,
    DORA,
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

NO_ACCESS = refused("no_client_access")
NOT_PERMITTED = refused("not_permitted")

# (who, may view Chloe's transcript, may write a chart note on Chloe's record)
RECORDS_OF_CHLOE = [
    pytest.param(facts(OLIVIA), OK, OK, id="account_owner"),
    pytest.param(facts(PAM), OK, OK, id="practice_manager"),
    pytest.param(facts(PETRA), OK, OK, id="practice_manager_with_export"),
    pytest.param(facts(SALLY), OK, OK, id="scheduler"),
    pytest.param(facts(BILL), OK, NOT_PERMITTED, id="biller_reads_but_does_not_write"),
    pytest.param(
        facts(but(BILL, roles=frozenset({Role.BILLER, Role.CLINICIAN}))),
        OK,
        OK,
        id="biller_also_clinician",
    ),
    pytest.param(facts(ERIN), OK, OK, id="clinician_entire_practice"),
    pytest.param(facts(FRANK), OK, OK, id="clinician_full_client_list"),
    pytest.param(facts(CARL), OK, OK, id="clinician_basic_primary"),
    pytest.param(facts(GRACE, granted=[CHLOE]), OK, OK, id="clinician_basic_granted"),
    pytest.param(facts(GRACE), NO_ACCESS, NO_ACCESS, id="clinician_basic_neither"),
    pytest.param(facts(BETTY), NO_ACCESS, NO_ACCESS, id="clinician_billing_neither"),
    pytest.param(facts(SAM, supervises=[CARL]), OK, OK, id="supervisor_of_primary"),
    pytest.param(facts(SAM), NO_ACCESS, NO_ACCESS, id="supervisor_neither"),
    pytest.param(facts(SUSAN, granted=[CHLOE]), OK, OK, id="supervisor_clinician_granted"),
    pytest.param(facts(DORA), OK, OK, id="messaging_box_off_still_keeps_records"),
    pytest.param(facts(IRIS), NO_ACCESS, NO_ACCESS, id="inactive_member"),
    pytest.param(facts(but(CARL, active=False)), NO_ACCESS, NO_ACCESS, id="inactive_primary"),
    pytest.param(facts(OSCAR), NO_ACCESS, NO_ACCESS, id="other_practice_owner"),
    pytest.param(facts(OTTO, granted=[CHLOE]), NO_ACCESS, NO_ACCESS, id="other_practice_granted"),
]


@pytest.mark.parametrize(("who", "view", "write"), RECORDS_OF_CHLOE)
def test_tr1_transcripts_are_read_by_everyone_with_access_to_the_client(who, view, write):
    del write
    assert may_view_transcript(who, CHLOE) == view


@pytest.mark.parametrize(("who", "view", "write"), RECORDS_OF_CHLOE)
def test_tr2_chart_notes_are_written_by_the_clients_editors(who, view, write):
    del view
    assert may_write_chart_note(who, CHLOE) == write


def test_tr2_only_readers_of_a_transcript_may_write_from_it():
    """Nobody copies from a transcript they may not read."""
    for param in RECORDS_OF_CHLOE:
        _who, view, write = param.values
        if write:
            assert view, param.id


def test_tr2_access_follows_the_client_not_the_writer():
    assert may_write_chart_note(facts(CARL), DANIEL) == NO_ACCESS  # Betty's client
    assert may_write_chart_note(facts(SAM, supervises=[CARL]), NORA) == NO_ACCESS
    assert may_write_chart_note(facts(OTTO), QUINN) == OK  # practice 2's own client
    assert may_write_chart_note(facts(OLIVIA), QUINN) == NO_ACCESS
