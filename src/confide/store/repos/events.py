"""The event log: what WebSocket hubs deliver, in position order (docs/realtime.md).

Rows come from the outbox only, through `EventLog.relay_outbox`, which one relay at a
time runs: it takes the relay lock, appends the committed outbox rows to `events` in
outbox order and marks them done, in one transaction. Positions are therefore handed
out in the relay's commit order, and a reader holding cursor N who reads
`position > N` can never miss a row that commits later (a later row always gets a
larger position). Holes in the numbering (a rolled-back relay on PostgreSQL) are
harmless: readers only compare positions.

Payloads hold ids only (the outbox's rule), never message text or names.
"""

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, literal, select, update

from confide.domain.ids import PracticeId
from confide.store.clock import aware, utcnow
from confide.store.hot import HotStatement
from confide.store.tables import EventRow, OutboxRow, core

# The relay's PostgreSQL advisory lock ("Confide" in ASCII): one relay at a time.
RELAY_LOCK_KEY = 0x436F6E66696465
# The relay runs in every commit that wrote outbox rows (store/uow.py relay_at_commit):
# its statements are built once and run on the cursor (store/hot.py).
_OUTBOX = core(OutboxRow).c
_EVENT_COLUMNS = ("practice_id", "kind", "payload", "created_at")
_APPEND_EVENT = HotStatement(
    insert(core(EventRow)).values({c: bindparam(c) for c in _EVENT_COLUMNS})
)
_RELAY_LOCK = HotStatement(select(func.pg_advisory_xact_lock(RELAY_LOCK_KEY).label("locked")))
_HEAD = HotStatement(select(func.max(core(EventRow).c.position).label("head")))
_DUE = (
    _OUTBOX.done_at.is_(None),
    _OUTBOX.kind.in_(bindparam("kinds", expanding=True)),
    _OUTBOX.available_at <= bindparam("now"),
)
_ANY_PENDING = select(_OUTBOX.id).where(*_DUE).limit(1)
# One row relayed: by its id (not an id range: on PostgreSQL a row with an id inside
# the range can commit after the select, and must not be marked done unrelayed).
_RELAYED = HotStatement(
    update(core(OutboxRow))
    .where(_OUTBOX.id == bindparam("outbox_id"))
    .values(done_at=bindparam("now"), attempts=_OUTBOX.attempts + 1)
)
_pending_by_kinds: dict[frozenset[str], HotStatement] = {}


def _pending(kinds: frozenset[str]) -> HotStatement:
    """The oldest due outbox rows of these kinds (a fixed set per relay: the kinds are
    part of the statement, so it is built once per set and takes no IN-list)."""
    statement = _pending_by_kinds.get(kinds)
    if statement is None:
        statement = _pending_by_kinds[kinds] = HotStatement(
            select(
                _OUTBOX.id, _OUTBOX.practice_id, _OUTBOX.kind, _OUTBOX.payload, _OUTBOX.created_at
            )
            .where(
                _OUTBOX.done_at.is_(None),
                _OUTBOX.kind.in_([literal(k) for k in sorted(kinds)]),
                _OUTBOX.available_at <= bindparam("now"),
            )
            .order_by(_OUTBOX.id)
            .limit(bindparam("limit"))
        )
    return statement


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    practice_id: PracticeId
    kind: str
    payload: dict[str, Any]
    created_at: datetime


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        position=row.position,
        practice_id=PracticeId(row.practice_id),
        kind=row.kind,
        payload=json.loads(row.payload),
        created_at=aware(row.created_at),
    )


class EventRepo:
    """One practice's events: cursor replay for a socket of that practice."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def list_events(
        self, practice_id: PracticeId, *, after: int, upto: int | None = None, limit: int = 200
    ) -> list[StoredEvent]:
        stmt = (
            select(EventRow.__table__)
            .where(EventRow.practice_id == practice_id, EventRow.position > after)
            .order_by(EventRow.position)
            .limit(limit)
        )
        if upto is not None:
            stmt = stmt.where(EventRow.position <= upto)
        return [_event(r) for r in self.conn.execute(stmt)]


class EventLog:
    """The log as a whole, across practices: for the relay and the hubs' fan-out only.

    Not a practice-scoped repo on purpose: the relay moves every practice's outbox rows,
    and a hub reads each new event once for all its sockets. Nothing read here leaves
    the process before a per-socket authorization check (realtime/frames.py)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def head(self) -> int:
        """The newest position, or 0 for an empty log."""
        return int(_HEAD.scalar_one(self.conn, {}) or 0)

    def oldest(self) -> int | None:
        value = self.conn.execute(select(func.min(EventRow.position))).scalar()
        return None if value is None else int(value)

    def read_after(self, position: int, *, limit: int) -> list[StoredEvent]:
        stmt = (
            select(EventRow.__table__)
            .where(EventRow.position > position)
            .order_by(EventRow.position)
            .limit(limit)
        )
        return [_event(r) for r in self.conn.execute(stmt)]

    def has_pending_outbox(self, kinds: Collection[str]) -> bool:
        """A cheap read before taking the relay lock (and, on SQLite, the write lock)."""
        row = self.conn.execute(_ANY_PENDING, {"kinds": list(kinds), "now": utcnow()}).first()
        return row is not None

    def relay_outbox(self, kinds: Collection[str], *, limit: int) -> int | None:
        """Append up to `limit` committed outbox rows of `kinds` to the log, in outbox id
        order, and mark them done. Returns the newest position, or None if nothing was
        pending.

        The caller runs this in a write transaction and commits it. On PostgreSQL the
        advisory lock (held to the end of the transaction) keeps relays of several
        processes one at a time; on SQLite the write transaction (`BEGIN IMMEDIATE`)
        already excludes every other writer."""
        if self.conn.dialect.name == "postgresql":
            _RELAY_LOCK.rows(self.conn, {})
        now = utcnow()
        rows = _pending(frozenset(kinds)).rows(self.conn, {"now": now, "limit": limit})
        if not rows:
            return None
        # One prebuilt statement executed for each row, in order (executemany: the
        # drivers run it row after row; no multi-row VALUES), keeps positions in outbox
        # order (a conversation's messages must reach readers in sequence order).
        _APPEND_EVENT.many(
            self.conn,
            [
                {
                    "practice_id": row.practice_id,
                    "kind": row.kind,
                    "payload": row.payload,
                    "created_at": row.created_at,
                }
                for row in rows
            ],
        )
        _RELAYED.many(self.conn, [{"outbox_id": r.id, "now": now} for r in rows])
        return self.head()

    def prune(self, before: datetime) -> int:
        """Drop events older than `before`, always keeping the newest one (so that a
        position is never handed out twice, whatever the database)."""
        head = self.head()
        result = self.conn.execute(
            delete(EventRow).where(EventRow.created_at < before, EventRow.position < head)
        )
        return result.rowcount
