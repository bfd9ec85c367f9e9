"""The Redis broker against a real redis-server that goes away and comes back (NT5):
it reconnects with backoff, asks hubs to look at the log after each reconnect, and
carries positions only."""

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from confide.realtime.redis_broker import RedisBroker

REDIS_SERVER = shutil.which("redis-server")
WAIT = 10.0  # a bound for "it arrives", never an assertion about speed

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [REDIS_SERVER or "redis-server", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess(free_port())
    server.start()
    yield server
    server.kill()


class Heard:
    """What one process's hub hears from its broker."""

    def __init__(self) -> None:
        self.items: list[int | None] = []
        self.changed = asyncio.Event()

    def __call__(self, position: int | None) -> None:
        self.items.append(position)
        self.changed.set()

    async def until(self, pred) -> None:
        async def wait() -> None:
            while not pred(self.items):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), WAIT)


def test_nt5_the_redis_broker_reconnects_and_carries_positions_only(
    redis_server: RedisProcess,
):
    async def scenario() -> None:
        url = f"redis://127.0.0.1:{redis_server.port}/0"
        here, there = (RedisBroker(url, min_backoff=0.05, max_backoff=0.2) for _ in range(2))
        heard_here, heard_there = Heard(), Heard()
        here.subscribe(heard_here)
        there.subscribe(heard_there)
        await here.start()
        await there.start()
        try:
            await heard_here.until(lambda xs: None in xs)  # connected: "look at the log"
            await heard_there.until(lambda xs: None in xs)
            await there.publish(5)
            await heard_here.until(lambda xs: 5 in xs)  # through Redis
            assert 5 in heard_there.items  # locally, at once

            redis_server.kill()
            await there.publish(6)  # Redis away: local only, no error, no wait
            assert 6 in heard_there.items
            redis_server.start()
            await heard_here.until(lambda xs: xs.count(None) >= 2)  # reconnected
            await heard_there.until(lambda xs: xs.count(None) >= 2)
            await there.publish(7)
            await heard_here.until(lambda xs: 7 in xs)
        finally:
            await here.stop()
            await there.stop()

    asyncio.run(scenario())
