"""The outbox: what must happen after commit, written in the same transaction."""

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, insert

from confide.domain.ids import PracticeId
from confide.store.clock import utcnow
from confide.store.hot import HotStatement
from confide.store.tables import OutboxRow, core

_COLUMNS = ("practice_id", "kind", "payload", "created_at", "available_at", "attempts")
_INSERT = HotStatement(insert(core(OutboxRow)).values({c: bindparam(c) for c in _COLUMNS}))


class OutboxWriter:
    """Rows are kept in memory until the unit of work commits and then inserted in one
    statement (`flush`, executemany), in the order they were added: a group commit's
    sends each add one, and one insert per send was a statement of its own in the hot
    path (docs/operations.md). Like the audit rows, they are part of the transaction
    from `add` on: a rollback (or a group command's undo) drops what it added."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.added = 0  # rows added since the last commit: the listeners' cue
        self._pending: list[dict[str, Any]] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, practice_id: PracticeId, kind: str, **payload: Any) -> None:
        self.add_delayed(practice_id, kind, None, **payload)

    def add_delayed(
        self, practice_id: PracticeId, kind: str, delay: timedelta | None, **payload: Any
    ) -> None:
        """`payload` holds ids only (never message text or names): it may be logged."""
        now = utcnow()
        available: datetime = now + delay if delay else now
        self._pending.append(
            dict(
                practice_id=practice_id,
                kind=kind,
                payload=json.dumps(payload, sort_keys=True, separators=(",", ":")),
                created_at=now,
                available_at=available,
                attempts=0,
            )
        )
        self.added += 1

    def discard(self, keep: int = 0) -> None:
        """Forget the rows added after the first `keep` (a rollback)."""
        del self._pending[keep:]
        self.added = len(self._pending)

    def flush(self) -> None:
        """Insert the rows added so far (the unit of work does, just before it commits)."""
        if self._pending:
            rows, self._pending = self._pending, []
            _INSERT.many(self.conn, rows)
