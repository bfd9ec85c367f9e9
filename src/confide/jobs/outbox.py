"""The outbox relay: outbox rows → the event log → the broker.

One relay at a time (PostgreSQL: an advisory lock; SQLite: the writer lock) appends the
pending rows to `events` and marks them done in ONE transaction, so positions follow
the relay's commit order (store/repos/events.py explains why readers never miss a row).
It then announces the new head to the broker.

In `serve`, the relay runs inside the very transaction that wrote the outbox rows, just
before it commits (`store.uow.relay_at_commit`): no transaction of its own, no wait for
a wake-up or for SQLite's writer lock; the committing thread hands the new position to
this loop, which announces it. The loop also polls every half second, so rows written
by another process (`confide worker`, the CLI), a delayed row, or a crash between a
commit and its announcement cost at most one poll interval, never an event.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from anyio import to_thread

from confide.jobs.background import BackgroundLoop
from confide.realtime.broker import Broker
from confide.realtime.frames import EVENT_KINDS
from confide.store.clock import utcnow
from confide.store.db import Database
from confide.store.uow import relay_at_commit, unit_of_work

log = logging.getLogger("confide.jobs")

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
        self._announced = 0

    def listen(self) -> Callable[[], None]:
        return relay_at_commit(self.db, EVENT_KINDS, self._committed, limit=BATCH)

    def _committed(self, position: int) -> None:
        """A commit relayed its own rows up to `position` (the committing thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the poll announces it
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._announce, position)

    def _announce(self, position: int) -> None:
        if position > self._announced:
            self._announced = position
            task = asyncio.get_running_loop().create_task(self.broker.publish(position))
            task.add_done_callback(_published)

    async def round(self) -> float | None:
        while (position := await to_thread.run_sync(relay_once, self.db)) is not None:
            self._announced = max(self._announced, position)
            await self.broker.publish(position)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            await to_thread.run_sync(prune_events, self.db)
        return None


def _published(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        # The hubs still find the events by polling the log's head.
        log.warning("announcing new events failed (%s)", type(exc).__name__)
