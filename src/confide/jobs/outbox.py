"""The outbox relay: committed outbox rows → the event log → the broker.

One relay at a time (PostgreSQL: an advisory lock; SQLite: the writer lock) appends the
pending rows to `events` and marks them done in ONE transaction, so positions follow
the relay's commit order (store/repos/events.py explains why readers never miss a row).
It then announces the new head to the broker. It is woken after every commit that
added outbox rows (`listen_for_outbox`) and polls every half second besides, so a
commit in another process, a missed wake-up or a crash between commit and announcement
costs at most one poll interval, never an event.
"""

import time
from collections.abc import Callable
from datetime import timedelta

from anyio import to_thread

from confide.jobs.background import BackgroundLoop
from confide.realtime.broker import Broker
from confide.realtime.frames import EVENT_KINDS
from confide.store.clock import utcnow
from confide.store.db import Database
from confide.store.uow import listen_for_outbox, unit_of_work

POLL_SECONDS = 0.5
BATCH = 500
# A socket that comes back with a cursor older than this gets `resync` (docs/realtime.md).
RETENTION = timedelta(days=7)
PRUNE_EVERY_SECONDS = 3600.0


def relay_once(db: Database, *, batch: int = BATCH) -> int | None:
    """Move one batch of pending outbox rows into the event log; the new head, or None
    when nothing was pending."""
    with unit_of_work(db, write=False) as uow:
        if not uow.event_log.has_pending_outbox(EVENT_KINDS):
            return None
    with unit_of_work(db, write=True) as uow:
        position = uow.event_log.relay_outbox(EVENT_KINDS, limit=batch)
        uow.commit()
    return position


def prune_events(db: Database) -> int:
    with unit_of_work(db, write=True) as uow:
        removed = uow.event_log.prune(utcnow() - RETENTION)
        uow.commit()
    return removed


class OutboxRelay(BackgroundLoop):
    name = "outbox relay"

    def __init__(self, db: Database, broker: Broker, *, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__(poll_seconds=poll_seconds)
        self.db = db
        self.broker = broker
        self._next_prune = time.monotonic() + 60.0

    def listen(self) -> Callable[[], None]:
        return listen_for_outbox(self.db, self.wake)

    async def round(self) -> float | None:
        while (position := await to_thread.run_sync(relay_once, self.db)) is not None:
            await self.broker.publish(position)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            await to_thread.run_sync(prune_events, self.db)
        return None
