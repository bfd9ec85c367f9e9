"""Redis pub/sub between several `confide serve` processes (docs/scale-out.md).

Only event-log positions cross Redis (see realtime/broker.py).
"""

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from confide.realtime.broker import CHANNEL, Listeners

log = logging.getLogger("confide.realtime")


class RedisBroker(Listeners):
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
