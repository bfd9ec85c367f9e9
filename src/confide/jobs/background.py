"""One shape for the server's background loops (outbox relay, job runner, push, exports).

    class Relay(BackgroundLoop):
        name = "outbox relay"

        def listen(self) -> Callable[[], None]:
            return listen_for_outbox(self.db, self.wake)   # woken after such commits

        async def round(self) -> float | None:
            ...                                            # do what is due
            return None                                    # then wait poll_seconds

A loop runs `round()` at start, then again whenever it is woken (`wake()` is
thread-safe: committing threads call it) or its wait runs out. `round()` returns how
long to wait at most before the next round (None: `poll_seconds`), so a loop that
knows when its next piece of work is due sleeps exactly that long. A round that raises
is logged with the exception's type name only (an error text might quote a row) and
retried with capped exponential backoff, so a database that is away for a while costs
retries, never the loop. `stop()` sets `stopping` (a threading.Event that work running
in threads can watch), cancels the task and waits for it.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("confide.jobs")

RETRY_BASE_SECONDS = 0.1
RETRY_CAP_SECONDS = 5.0


def _nothing() -> None:
    return None


class BackgroundLoop:
    name = "background loop"

    def __init__(self, *, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] = _nothing

    # -- what a loop defines ----------------------------------------------------------

    def listen(self) -> Callable[[], None]:
        """Subscribe `self.wake` to whatever makes work (commits of some kind); returns
        the unsubscribe function. Default: nothing, the loop only polls."""
        return _nothing

    async def round(self) -> float | None:
        raise NotImplementedError

    # -- lifecycle (inside `serve`'s lifespan, or `confide worker`) ---------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stopping.clear()
        self._stop_listening = self.listen()
        self._task = asyncio.create_task(self._run(), name=f"confide-{self.name}")

    async def stop(self) -> None:
        self.stopping.set()
        self._stop_listening()
        self._stop_listening = _nothing
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Thread-safe: run a round soon."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                wait = await self.round()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("%s failed (%s); retrying", self.name, type(exc).__name__)
                wait = min(RETRY_BASE_SECONDS * 2**failures, RETRY_CAP_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), self.poll_seconds if wait is None else wait
                )
