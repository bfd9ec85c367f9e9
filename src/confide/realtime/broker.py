"""The broker: tells every hub "the event log has grown up to position P".

Only a position crosses it, never an event, an id list or a name: each hub reads the
events themselves from the database and authorizes them per socket (docs/realtime.md).
So nothing with health information ever reaches Redis.

`MemoryBroker` (the default) serves one process. `RedisBroker` (`CONFIDE_REDIS_URL`,
in realtime/redis_broker.py, imported only then) shares the announcements between
several `confide serve` processes through Redis pub/sub; it reconnects with backoff,
and while Redis is away the hubs still catch up from the event log (they poll its head
every second), so sockets lose nothing.
"""

import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("confide.realtime")

# Called in the event loop with the newest position, or None for "something may have
# been missed (a reconnect): look at the event log".
Listener = Callable[[int | None], None]

CHANNEL = "confide:events"


class Broker(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, position: int) -> None:
        """Announce that events up to `position` are committed in the log."""
        ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every announcement; returns the unsubscribe function."""
        ...


class Listeners:
    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(f for f in self._listeners if f is not listener)

        return unsubscribe

    def _announce(self, position: int | None) -> None:
        for listener in self._listeners:
            try:
                listener(position)
            except Exception as exc:  # one bad listener must not starve the others
                log.error("broker listener failed: %s", type(exc).__name__)


class MemoryBroker(Listeners):
    """In-process: one `serve` process (the embedded default)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, position: int) -> None:
        self._announce(position)


def make_broker(redis_url: str | None) -> Broker:
    if not redis_url:
        return MemoryBroker()
    # Imported only when configured: the redis client costs ~20 MB of memory, which the
    # embedded default does not need.
    from confide.realtime.redis_broker import RedisBroker

    return RedisBroker(redis_url)
