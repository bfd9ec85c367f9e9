"""Announcements to clients (AN1, plus plan): one text to many clients, no replies.

Who may send is `policy.may_send_announcement`; the audience is fixed when it is sent.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from confide.domain.ids import MemberId, PracticeId


class Audience(StrEnum):
    """AN1: the account owner and practice managers to all active clients; a clinician
    to their own active clients (those they are primary clinician of)."""

    ALL_CLIENTS = "all_clients"
    MY_CLIENTS = "my_clients"


@dataclass(frozen=True, slots=True)
class Announcement:
    id: int
    practice_id: PracticeId
    author_id: MemberId
    audience: Audience
    recipients: int
    text: str | None  # None when the stored body failed its integrity check (RC2)
    created_at: datetime
