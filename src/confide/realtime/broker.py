"""The broker: tells every hub "the event log has grown up to position P".

Only a position crosses it, never an event, an id list or a name: each hub reads the
events themselves from the database and authorizes them per socket (docs/realtime.md).
So nothing with health information ever reaches Redis.

`MemoryBroker` (the default) serves one process. `RedisBroker` (`CONFIDE_REDIS_URL`)
shares the announcements between several `confide serve` processes through Redis
pub/sub; it reconnects with backoff, and while Redis is away the hubs still catch up
from the event log (they poll its head every second), so sockets lose nothing.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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


class _Listeners:
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


class MemoryBroker(_Listeners):
    """In-process: one `serve` process (the embedded default)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, position: int) -> None:
        self._announce(position)


class RedisBroker(_Listeners):
    """Redis pub/sub on one channel, carrying positions only.

    A publish reaches this process's own hub at once (no round trip through Redis) and
    the other processes through Redis. While the connection is down, publishing skips
    Redis (the other hubs poll the event log), and the listener reconnects with
    exponential backoff, announcing None after each reconnect so hubs catch up.
    """

    def __init__(
        self,
        url: str,
        *,
        channel: str = CHANNEL,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__()
        self._url = url
        self._channel = channel
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._redis: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=2, health_check_interval=10
        )
        self._task = asyncio.create_task(self._listen(), name="confide-redis-broker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
            self._redis = None

    async def publish(self, position: int) -> None:
        self._announce(position)
        if self._redis is None or not self.connected.is_set():
            return
        try:
            await asyncio.wait_for(self._redis.publish(self._channel, str(position)), timeout=1)
        except (RedisError, OSError, TimeoutError) as exc:
            # The other hubs find the events by polling the log; nothing is lost.
            log.warning("redis publish failed (%s); hubs fall back to polling", type(exc).__name__)

    async def _listen(self) -> None:
        backoff = self._min_backoff
        if self._redis is None:
            raise RuntimeError("the Redis broker listens only after start()")
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self.connected.set()
                if backoff > self._min_backoff:
                    log.info("redis broker reconnected")
                backoff = self._min_backoff
                self._announce(None)  # whatever was published while we were away
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        position = int(message["data"])
                    except (TypeError, ValueError):
                        continue
                    self._announce(position)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if self.connected.is_set():
                    log.warning("redis broker disconnected (%s)", type(exc).__name__)
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                self.connected.clear()
                with contextlib.suppress(RedisError, OSError, asyncio.CancelledError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


def make_broker(redis_url: str | None) -> Broker:
    return RedisBroker(redis_url) if redis_url else MemoryBroker()
