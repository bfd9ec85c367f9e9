"""T39 (issue 8): overload and dependency failure, against a real `confide serve`.

Overload: the server's capacity is measured first (sends at c=16, the write queue's
bound here, closed loop, ~2.5 s),
then sends are offered at twice that rate, open loop (a fixed arrival schedule that does
not slow down when answers do), for 10 s (60 s with CONFIDE_OVERLOAD_TEST=long; README).
If that load was all served (nothing shed), the measurement undershot, as it can on a
shared machine: the capacity is then at least the rate just served, and the load is
offered again at twice that (3 tries at most; every try is held to the rules below).
Pass, as SECURITY-TESTS.md T39 says:

- every answer is 201, or 429/503 with Retry-After; no other 5xx; no connection errors;
- the server did shed (some 503s) and did work (some 201s);
- the server's peak RSS (VmHWM) stays under 1 GiB;
- within 10 s of the load stopping a send gets 201 in normal time (under a second);
- every acknowledged message is stored exactly once, as acknowledged, and nothing that
  was refused is stored (read from the database afterwards: tests/crash_harness.py).

The server runs with low admission bounds (CONFIDE_MAX_CONCURRENT_REQUESTS=32,
CONFIDE_MAX_PENDING_WRITES=16) so that shedding surely happens on a loaded 2-core
machine, and without the per-sender send rate (T11 is tests/integration/test_send_rate.py;
here 429s would hide the overload answers).

The socket cap: past CONFIDE_MAX_WEBSOCKETS open sockets a new one is closed with 1013.

Database unavailable on SQLite: another process holds the database's write lock (what a
backup or a `sqlite3` console does); a send waits `CONFIDE_SQLITE_BUSY_TIMEOUT_MS`, then
gets 503 `database_unavailable` with Retry-After and is not stored; once the lock goes,
sends are stored again. Making the file read-only cannot be done under a running server:
its open descriptors keep write access (and root ignores the mode), and a read-only
remount of a mounted data folder is refused while files are open for writing (EBUSY;
tried, docs/operations.md). PostgreSQL's outage test is in test_crash_durability.py.
"""

import asyncio
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from confide.domain.actors import Actor, Party, Via
from confide.runtime import Runtime, build_runtime
from confide.services import sessions
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests.conftest import TEST_MASTER_KEY, make_settings
from tests.crash_harness import (
    KEY_PREFIX,
    Lane,
    OwnDatabase,
    Seeded,
    Send,
    Server,
    check_database,
    free_port,
    seed_practice,
)
from tests.crash_harness import own_database as harness_own_database

ON_POSTGRES = os.environ.get("CONFIDE_TEST_DATABASE") == "postgres"
LONG = os.environ.get("CONFIDE_OVERLOAD_TEST", "short") == "long"
SECONDS = float(os.environ.get("CONFIDE_OVERLOAD_SECONDS", 60 if LONG else 10))
CONVERSATIONS = 40
POOL = 128  # client connections: more than the server admits, so that it must shed
PENDING = 16  # the server's CONFIDE_MAX_PENDING_WRITES here
OVERLOAD_TRIES = 3  # open loops at most, each at twice the capacity known by then
GIB = 1 << 30


@pytest.fixture
def own_database() -> Iterator[OwnDatabase]:
    with harness_own_database("confide_overload") as db:
        yield db


def overload_server(
    tmp_path: Path, database_url: str, conversations: int, **env: str
) -> tuple[Seeded, Server]:
    """A seeded practice, and `confide serve` on it (not yet started). `database_url`:
    "" for SQLite in the test's folder, or a PostgreSQL database of the test's own (the
    seeding's emails are the same in every test)."""
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir, database_url=database_url)
    runtime = build_runtime(settings)
    try:
        seeded = seed_practice(runtime, conversations=conversations)
    finally:
        runtime.close()
    port = free_port()
    full_env = {
        "CONFIDE_MASTER_KEY": TEST_MASTER_KEY,
        "CONFIDE_LOG_LEVEL": "warning",
        "CONFIDE_PUBLIC_ORIGIN": f"http://127.0.0.1:{port}",
        **env,
    }
    if settings.database_url:
        full_env["CONFIDE_DATABASE_URL"] = settings.database_url
    return seeded, Server(port, data_dir, full_env, tmp_path / "serve.log")


# --- a small HTTP/1.1 client on raw asyncio streams -----------------------------------------
# httpx costs ~1 ms of CPU a request; at twice the server's rate the load generator would
# take the core the server needs. This client costs a few tens of microseconds.


class ConnectionFailed(Exception):
    pass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


# uvicorn closes a keep-alive connection after 5 s idle (its timeout_keep_alive); a
# request written on it as it closes gets no answer. Like any HTTP client, we do not
# reuse a connection idle for longer than that: it is opened anew.
IDLE_REOPEN = 4.0


class RawConnection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def request(self, path: str, token: str, payload: bytes) -> Answer:
        if self.writer is not None and time.monotonic() - self.used > IDLE_REOPEN:
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        try:
            self.writer.write(head + payload)
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            self.close()
            raise ConnectionFailed(type(exc).__name__) from exc
        if headers.get("connection", "").lower() == "close":
            self.close()
        self.used = time.monotonic()
        return Answer(status, headers, body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Load:
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    missing_retry_after: int = 0
    connection_errors: Counter[str] = field(default_factory=Counter)
    sends: list[Send] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # of 201s, from the arrival time
    offered: int = 0
    seconds: float = 0.0

    def rate(self, status: int) -> float:
        return self.statuses[status] / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lat = sorted(self.latencies)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else None
        pct = f"201 p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms" if p else "no 201"
        return (
            f"offered {self.offered} in {self.seconds:.1f} s, statuses {dict(self.statuses)}, "
            f"codes {dict(self.codes)}, connection errors {dict(self.connection_errors)}, {pct}"
        )


class Driver:
    """Sends over `POOL` keep-alive connections, each with its own key and text."""

    def __init__(self, server: Server, lanes: list[Lane], tag: str) -> None:
        self.server = server
        self.lanes = lanes
        self.tag = tag
        # Last in, first out: the connections in use stay warm, the others age out.
        self.idle: asyncio.LifoQueue[RawConnection] = asyncio.LifoQueue()
        for _ in range(POOL):
            self.idle.put_nowait(RawConnection(server.port))
        self.n = 0

    async def one(self, load: Load, arrival: float) -> int | None:
        self.n += 1
        n = self.n
        lane = self.lanes[n % len(self.lanes)]
        key = f"{KEY_PREFIX}{self.tag}-{n}"
        send = Send(lane, n, key, f"overload {self.tag} {n}")
        payload = json.dumps({"text": send.text, "idempotency_key": key}).encode()
        path = f"/api/v1/conversations/{lane.conversation_id}/messages"
        load.offered += 1
        load.sends.append(send)
        conn = await self.idle.get()
        try:
            answer = await conn.request(path, lane.token, payload)
        except ConnectionFailed as exc:
            load.connection_errors[str(exc)] += 1
            return None
        finally:
            self.idle.put_nowait(conn)
        load.statuses[answer.status] += 1
        if answer.status in (200, 201):
            message = json.loads(answer.body)["message"]
            send.message_id, send.seq = message["id"], message["seq"]
            load.latencies.append(time.monotonic() - arrival)
            return answer.status
        try:
            load.codes[json.loads(answer.body)["error"]["code"]] += 1
        except (ValueError, KeyError, TypeError):
            load.codes["?"] += 1
        if answer.status in (429, 503) and "retry-after" not in answer.headers:
            load.missing_retry_after += 1
        return answer.status

    async def closed_loop(self, workers: int, seconds: float) -> Load:
        load = Load()
        t0 = time.monotonic()
        deadline = t0 + seconds

        async def worker() -> None:
            # Like a well-behaved client, a worker told to come back waits Retry-After.
            while time.monotonic() < deadline:
                if await self.one(load, time.monotonic()) in (429, 503):
                    await asyncio.sleep(1)

        await asyncio.gather(*(worker() for _ in range(workers)))
        load.seconds = time.monotonic() - t0
        return load

    async def open_loop(self, rate: float, seconds: float) -> Load:
        """Arrivals on a fixed schedule, `rate` a second, whatever the answers do."""
        load = Load()
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        total = int(rate * seconds)
        started = 0
        while started < total:
            now = time.monotonic()
            due = min(total, int((now - t0) * rate) + 1)
            while started < due:
                arrival = t0 + started / rate
                task = asyncio.create_task(self.one(load, arrival))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                started += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*list(tasks))
        load.seconds = time.monotonic() - t0
        return load

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def back_to_normal(server: Server, lane: Lane, within: float) -> tuple[float, float]:
    """Sends one at a time until one gets 201 in under a second: (seconds after the
    load stopped, that send's latency)."""
    t0 = time.monotonic()
    url = f"{server.base}/api/v1/conversations/{lane.conversation_id}/messages"
    with httpx.Client(headers={"Authorization": f"Bearer {lane.token}"}, timeout=10) as client:
        i = 0
        while time.monotonic() - t0 < within:
            i += 1
            s = time.monotonic()
            r = client.post(url, json={"text": f"after {i}", "idempotency_key": f"after-{i}"})
            took = time.monotonic() - s
            if r.status_code == 201 and took < 1.0:
                return time.monotonic() - t0, took
            assert r.status_code in (429, 503), r.text
            time.sleep(0.2)
    raise AssertionError(f"no 201 in normal time within {within} s of the load stopping")


def test_t39_at_twice_capacity_the_server_sheds_and_recovers(
    tmp_path: Path, own_database: OwnDatabase
):
    seeded, server = overload_server(
        tmp_path,
        own_database.url,
        CONVERSATIONS,
        CONFIDE_SEND_RATE_PER_SECOND="0",
        CONFIDE_MAX_CONCURRENT_REQUESTS="32",
        CONFIDE_MAX_PENDING_WRITES=str(PENDING),
    )
    server.start()
    assert server.proc is not None
    try:

        async def run() -> tuple[Load, list[Load]]:
            driver = Driver(server, seeded.lanes, "o")
            try:
                # At the write queue's bound, so that the measurement itself is not
                # shed: a shed worker waits Retry-After (1 s), which would measure the
                # back-off, not the server, and "twice" that might not overload it.
                measured = await driver.closed_loop(PENDING, 2.5)
                capacity = measured.rate(201) + measured.rate(200)
                assert capacity > 0, measured.summary()
                loads = [await driver.open_loop(2 * capacity, SECONDS)]
                while not loads[-1].statuses[503] and len(loads) < OVERLOAD_TRIES:
                    # Nothing shed: the measurement undershot (on a shared machine
                    # another process can hold the cores for those 2.5 s; CI runs the
                    # PostgreSQL and SQLite suites side by side). The server served
                    # all of this load, so its capacity is at least that: twice it.
                    capacity = max(capacity, loads[-1].rate(201) + loads[-1].rate(200))
                    print(
                        f"\nT39 nothing shed at {loads[-1].summary()}; again at twice"
                        " the capacity known now"
                    )
                    loads.append(await driver.open_loop(2 * capacity, SECONDS))
                return measured, loads
            finally:
                driver.close()

        measured, loads = asyncio.run(run())
        loaded = loads[-1]
        recovered_after, took = back_to_normal(server, seeded.lanes[0], within=10)
        rss = peak_rss(server.proc.pid)
    finally:
        server.stop()
    log = server.log_tail()
    print(f"\nT39 capacity (c={PENDING}): {measured.rate(201):.0f}/s; {measured.summary()}")
    print(f"T39 2x for {SECONDS:.0f} s (try {len(loads)}): {loaded.summary()}")
    print(
        f"T39 back to normal {recovered_after:.2f} s after the load (send took {took * 1000:.0f}"
        f" ms); server RSS peak {rss / 2**20:.0f} MB"
    )
    for load in (measured, *loads):
        assert set(load.statuses) <= {201, 429, 503}, f"{load.summary()}\n{log}"
        assert load.missing_retry_after == 0, load.summary()
        assert not load.connection_errors, f"{load.summary()}\n{log}"
    assert loaded.statuses[503] > 0, f"nothing shed: {loaded.summary()}"
    assert loaded.statuses[201] > 0, f"no work done: {loaded.summary()}"
    for load in loads:
        assert set(load.codes) <= {"overloaded"}, load.summary()
    assert rss < GIB

    settings = make_settings(server.data_dir, database_url=own_database.url)
    runtime = build_runtime(settings, run_migrations=False)
    try:
        found = check_database(
            runtime, seeded, [s for load in (measured, *loads) for s in load.sends]
        )
    finally:
        runtime.close()
    acked = sum(load.statuses[201] for load in (measured, *loads))
    assert not found.lost, found.lost[:10]
    assert not found.duplicate_keys and not found.duplicate_texts
    assert not found.phantoms and not found.gaps and not found.audit
    assert found.stored == acked  # what was refused was not stored


def test_t39_sockets_past_the_cap_are_closed_with_1013(tmp_path: Path, own_database: OwnDatabase):
    seeded, server = overload_server(tmp_path, own_database.url, 2, CONFIDE_MAX_WEBSOCKETS="2")
    settings = make_settings(server.data_dir, database_url=own_database.url)
    runtime = build_runtime(settings, run_migrations=False)
    try:
        with unit_of_work(runtime.db) as uow:
            me = Actor(seeded.practice_id, Party.member(seeded.lanes[0].sender_id), Via.PASSWORD)
            session_id = sessions.start_session(uow, me)
    finally:
        runtime.close()
    server.start()
    url = f"ws://127.0.0.1:{server.port}/api/v1/ws"
    cookie = {"Cookie": f"__Host-confide_session={session_id}"}

    def served(ws) -> None:
        """Resumed and answering pings: counted by the hub."""
        ws.send(json.dumps({"type": "resume", "cursor": None}))
        ws.send(json.dumps({"type": "ping"}))
        while json.loads(ws.recv(timeout=10))["type"] != "pong":
            pass

    try:
        with connect(url, additional_headers=cookie) as one:
            served(one)
            with connect(url, additional_headers=cookie) as two:
                served(two)
                with connect(url, additional_headers=cookie) as third:
                    with pytest.raises(ConnectionClosed) as closed:
                        third.recv(timeout=10)
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 1013
        # Below the cap again: a socket is served.
        with connect(url, additional_headers=cookie) as again:
            served(again)
    finally:
        server.stop()


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's lock; PostgreSQL: test_crash_durability.py")
def test_t39_sqlite_unavailable_sends_get_503_and_are_not_stored(tmp_path: Path):
    seeded, server = overload_server(tmp_path, "", 2, CONFIDE_SQLITE_BUSY_TIMEOUT_MS="300")
    server.start()
    lane = seeded.lanes[0]
    url = f"{server.base}/api/v1/conversations/{lane.conversation_id}/messages"

    def send(client: httpx.Client, key: str) -> httpx.Response:
        return client.post(url, json={"text": f"db {key}", "idempotency_key": key})

    holder = sqlite3.connect(server.data_dir / "confide.db", isolation_level=None, timeout=10)
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {lane.token}"}, timeout=30) as c:
            assert send(c, "db-0").status_code == 201
            holder.execute("BEGIN EXCLUSIVE")  # the write lock, held by another process
            during = [send(c, f"db-{i}") for i in (1, 2)]
            holder.execute("ROLLBACK")
            after = [send(c, f"db-{i}") for i in (1, 2)]
    finally:
        holder.close()
        server.stop()
    log = server.log_tail()
    for r in during:
        assert r.status_code == 503, f"{r.status_code} {r.text}\n{log}"
        assert r.json()["error"]["code"] == "database_unavailable"
        assert int(r.headers["retry-after"]) >= 1
    assert [r.status_code for r in after] == [201, 201]  # stored now, once
    seq = [r.json()["message"]["seq"] for r in after]
    assert seq == [seq[0], seq[0] + 1]
    check = sqlite3.connect(server.data_dir / "confide.db")
    try:
        keys = [
            k
            for (k,) in check.execute(
                "SELECT idempotency_key FROM messages WHERE conversation_id = ?",
                (lane.conversation_id,),
            )
        ]
    finally:
        check.close()
    assert sorted(k for k in keys if k.startswith("db-")) == ["db-0", "db-1", "db-2"]


def test_t39_healthz_answers_while_every_worker_thread_is_taken(runtime: Runtime):
    """/healthz answers from the event loop. The synchronous routes run in anyio's worker
    threads (40 per process); under overload every one of them can be taken (waiting for
    the database, say), and a health check that needed one too would wait with them: a
    load balancer would take out a process that is only busy, just when it does the most
    work. Here every worker thread's token is held while /healthz is asked."""
    app = create_app(runtime)

    async def check() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        holders = [object() for _ in range(int(limiter.total_tokens))]
        for holder in holders:
            await limiter.acquire_on_behalf_of(holder)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                with anyio.fail_after(5):
                    health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
        finally:
            for holder in holders:
                limiter.release_on_behalf_of(holder)

    anyio.run(check)
