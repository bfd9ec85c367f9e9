"""SPEC RC1 and issue 7 ("Audit trail"): who views, filters and exports the practice's
audit log. The account owner and practice managers (with or without
`export_client_data`: the log holds ids, not health information); nobody else."""

import pytest

from confide.domain.entities import AccessLevel, Role
from confide.domain.policy import may_view_audit_log

from .people import (
    BETTY,
    BILL,
    CARL,
    DORA,
    ERIN,
    FRANK,
    GRACE,
    IRIS,
    OK,
    OLIVIA,
    OSCAR,
    OTTO,
    PAM,
    PETRA,
    SALLY,
    SAM,
    SUSAN,
    but,
    refused,
)

NOT_PERMITTED = refused("not_permitted")

AUDIT_LOG_VIEWERS = [
    pytest.param(OLIVIA, OK, id="account_owner"),
    pytest.param(PAM, OK, id="practice_manager_without_export"),
    pytest.param(PETRA, OK, id="practice_manager_with_export"),
    pytest.param(OSCAR, OK, id="other_practice_owner_of_their_own_log"),
    pytest.param(
        but(ERIN, roles=frozenset({Role.PRACTICE_MANAGER, Role.CLINICIAN})),
        OK,
        id="practice_manager_also_clinician",
    ),
    pytest.param(
        but(OLIVIA, roles=frozenset({Role.ACCOUNT_OWNER, Role.CLINICIAN}), access_level=None),
        OK,
        id="account_owner_also_clinician",
    ),
    pytest.param(BILL, NOT_PERMITTED, id="biller"),
    pytest.param(SALLY, NOT_PERMITTED, id="scheduler"),
    pytest.param(ERIN, NOT_PERMITTED, id="clinician_entire_practice"),
    pytest.param(FRANK, NOT_PERMITTED, id="clinician_full_client_list"),
    pytest.param(BETTY, NOT_PERMITTED, id="clinician_billing"),
    pytest.param(CARL, NOT_PERMITTED, id="clinician_basic"),
    pytest.param(GRACE, NOT_PERMITTED, id="clinician_granted"),
    pytest.param(SAM, NOT_PERMITTED, id="supervisor"),
    pytest.param(SUSAN, NOT_PERMITTED, id="supervisor_and_clinician"),
    pytest.param(DORA, NOT_PERMITTED, id="clinician_messaging_box_off"),
    pytest.param(OTTO, NOT_PERMITTED, id="other_practice_clinician"),
    pytest.param(
        but(BILL, roles=frozenset({Role.BILLER, Role.SCHEDULER, Role.SUPERVISOR})),
        NOT_PERMITTED,
        id="biller_scheduler_supervisor",
    ),
    pytest.param(
        but(CARL, access_level=AccessLevel.ENTIRE_PRACTICE, export_client_data=True),
        NOT_PERMITTED,
        id="clinician_entire_practice_with_export_flag",
    ),
    pytest.param(IRIS, refused("inactive"), id="inactive_clinician"),
    pytest.param(but(OLIVIA, active=False), refused("inactive"), id="inactive_account_owner"),
    pytest.param(but(PETRA, active=False), refused("inactive"), id="inactive_practice_manager"),
]


@pytest.mark.parametrize(("member", "expected"), AUDIT_LOG_VIEWERS)
def test_rc1_audit_log_is_viewed_by_the_account_owner_and_practice_managers(member, expected):
    assert may_view_audit_log(member) == expected
