"""The practice data export (EX1-EX6): its scope, its states and its limits.

Pure: no I/O. The archive itself is written by `services/exports.py` (the job body);
who may export is `policy.may_export`.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from confide.domain.ids import MemberId, PracticeId

# EX3: the download link expires 72 hours after the archive is ready.
DOWNLOAD_LIFETIME: Final = timedelta(hours=72)
# EX3: at least 128 random bits; 24 bytes of token_urlsafe are 192 bits (32 characters).
PASSWORD_BYTES: Final = 24
# A run that stops renewing its lease (a crashed worker) is claimed again after this.
LEASE: Final = timedelta(seconds=60)
# Runs of one export before it is failed for good (`failed`, reason `gave_up`).
MAX_ATTEMPTS: Final = 3


class ExportScope(StrEnum):
    """EX2: all clients of the practice, or all clients of one clinician (as primary)."""

    PRACTICE = "practice"
    CLINICIAN = "clinician"


class ExportStatus(StrEnum):
    """EX4: queued, generating (with progress), ready (to download), failed (with the
    reason). After the download window: `expired`; removed early by an exporter:
    `deleted`."""

    QUEUED = "queued"
    GENERATING = "generating"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class DataExport:
    id: int
    practice_id: PracticeId
    requested_by: MemberId
    scope: ExportScope
    clinician_id: MemberId | None
    password_protected: bool
    status: ExportStatus
    progress: int
    attempts: int
    error: str | None
    file_name: str | None
    file_size: int | None
    messages: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None

    def downloadable(self, now: datetime) -> bool:
        return (
            self.status is ExportStatus.READY
            and self.file_name is not None
            and self.expires_at is not None
            and now < self.expires_at
        )
