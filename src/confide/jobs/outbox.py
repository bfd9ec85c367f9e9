"""The outbox relay: committed outbox rows → the event log → the broker.

One relay at a time (PostgreSQL: an advisory lock; SQLite: the writer lock) appends the
pending rows to `events` and marks them done in ONE transaction, so positions follow
the relay's commit order (store/repos/events.py explains why readers never miss a row).
It then announces the new head to the broker. It is woken after every commit that
added outbox rows (`listen_for_outbox`) and polls every half second besides, so a
commit in another process, a missed wake-up or a crash between commit and announcement
costs at most one poll interval, never an event.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from anyio import to_thread

from confide.realtime.broker import Broker
from confide.realtime.frames import EVENT_KINDS
from confide.store.clock import utcnow
from confide.store.db import Database
from confide.store.uow import listen_for_outbox, unit_of_work

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


def _nothing() -> None:
    return None


class OutboxRelay:
    def __init__(self, db: Database, broker: Broker, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.db = db
        self.broker = broker
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] = _nothing

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_listening = listen_for_outbox(self.db, self.wake)
        self._wake.set()  # whatever was committed while no relay ran
        self._task = asyncio.create_task(self._run(), name="confide-outbox-relay")

    async def stop(self) -> None:
        self._stop_listening()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Thread-safe: called by the committing thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        next_prune = time.monotonic() + 60.0
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
            try:
                while (position := await to_thread.run_sync(relay_once, self.db)) is not None:
                    await self.broker.publish(position)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                    await to_thread.run_sync(prune_events, self.db)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Ids-only payloads, but the error text might quote a row: type only.
                failures += 1
                log.warning("outbox relay failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
