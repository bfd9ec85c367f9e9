"""The outbox: what must happen after commit, written in the same transaction."""

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert

from confide.domain.ids import PracticeId
from confide.store.clock import utcnow
from confide.store.tables import OutboxRow, core

_INSERT = insert(core(OutboxRow))


class OutboxWriter:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.added = 0

    def add(self, practice_id: PracticeId, kind: str, **payload: Any) -> None:
        self.add_delayed(practice_id, kind, None, **payload)

    def add_delayed(
        self, practice_id: PracticeId, kind: str, delay: timedelta | None, **payload: Any
    ) -> None:
        """`payload` holds ids only (never message text or names): it may be logged."""
        now = utcnow()
        available: datetime = now + delay if delay else now
        self.conn.execute(
            _INSERT,
            dict(
                practice_id=practice_id,
                kind=kind,
                payload=json.dumps(payload, sort_keys=True, separators=(",", ":")),
                created_at=now,
                available_at=available,
                attempts=0,
            ),
        )
        self.added += 1
