"""T35 crash durability: seed a practice, run `confide serve` as a real process, send
at a steady rate while killing it, then read back what the database holds.

Used by tests/integration/test_crash_durability.py; reusable for other fault tests
(overload, dependency failure). The pieces:

- `seed_practice`: one practice built through the real services (as tests/personas.py
  does), with `conversations` conversations, each with a sender who holds an API token.
- `Server`: `confide serve` in a subprocess on a fixed data folder / database and port;
  `kill()` is SIGKILL (no shutdown of any kind), `start()` runs it again on the same data
  and port.
- `LoadGenerator`: one asyncio loop, one `httpx.AsyncClient` with a bounded pool. It
  offers sends at `rate` per second spread over the conversations, each with its own
  idempotency key and a text of its own; a send that is not acknowledged (connection
  refused or reset, timeout, 503/429) is sent again with the SAME key until it is. While
  the server is down, the senders wait on one health probe instead of hammering the port.
- `check_database`: what was acknowledged against what is stored (lost, duplicated,
  seq gaps, audit rows), read in a unit of work from the database itself.
- `own_database`: a PostgreSQL database of the test's own (or SQLite in its folder), so
  that ending "every connection to the database" touches no other test.
"""

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select, text

from confide.domain.actors import Actor, Party, Via
from confide.domain.entities import AccessLevel, Plan, Role
from confide.runtime import Runtime
from confide.services import clients, messaging, practice, sessions, team
from confide.store.crypto import message_aad
from confide.store.repos.audit import verify_chains
from confide.store.repos.practices import ensure_data_key
from confide.store.tables import AuditRow, ConversationRow, MessageRow
from confide.store.uow import unit_of_work

# httpcore tries `import sniffio` for every lock it makes. sniffio is not installed here,
# and a failed import is not cached: searching sys.path each time cost about half the
# load generator's CPU. A None entry makes the same import fail at once.
try:
    import sniffio  # noqa: F401
except ImportError:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

CONFIDE = str(Path(sys.executable).parent / "confide")
PASSWORD = "crash-harness-password-not-secret"
KEY_PREFIX = "crash-"
ACKED = (200, 201)  # 201 stored now; 200 an MS5 replay of a key stored before
RETRYABLE = (429, 503)  # the server says "not now": not acknowledged, send again


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- seeding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lane:
    """One conversation and the member who sends in it (with their API token)."""

    conversation_id: int
    sender_id: int
    token: str


@dataclass(frozen=True)
class Seeded:
    practice_id: int
    lanes: list[Lane]


def seed_practice(runtime: Runtime, *, conversations: int) -> Seeded:
    """A practice (plan plus, team and client messaging on) with `conversations`
    conversations: `conversations // 2` clinicians, each with an API token, the primary
    clinician of a client of their own, in a conversation with that client and in one
    with a colleague. Everything goes through the services, one transaction each."""
    db = runtime.db
    with unit_of_work(db) as uow:
        pid, owner_id = practice.create_practice(
            uow,
            runtime.passwords,
            name="Crash Practice",
            plan=Plan.PLUS,
            owner_name="Crash Owner",
            owner_email="owner@crash.test",
            owner_password=PASSWORD,
            owner_access_level=AccessLevel.ENTIRE_PRACTICE,
        )
    owner = Actor(pid, Party.member(owner_id), Via.CLI)
    with unit_of_work(db) as uow:
        practice.set_messaging_switches(
            uow, owner, team=True, clients=True, auto_allow_new_clients=True
        )
    with unit_of_work(db) as uow:
        colleague = team.add_member(
            uow,
            owner,
            runtime.passwords,
            name="Crash Colleague",
            email="colleague@crash.test",
            roles=(Role.CLINICIAN,),
            access_level=AccessLevel.ENTIRE_PRACTICE,
            password=PASSWORD,
        ).id
    lanes: list[Lane] = []
    for i in range((conversations + 1) // 2):
        with unit_of_work(db) as uow:
            mid = team.add_member(
                uow,
                owner,
                runtime.passwords,
                name=f"Crash Sender {i}",
                email=f"sender{i}@crash.test",
                roles=(Role.CLINICIAN,),
                access_level=AccessLevel.BASIC,
                password=PASSWORD,
            ).id
            client_id = clients.create_client(
                uow,
                owner,
                name=f"Crash Client {i}",
                email=f"client{i}@crash.test",
                primary_clinician_id=mid,
            ).id
        me = Actor(pid, Party.member(mid), Via.API_TOKEN)
        with unit_of_work(db) as uow:
            token = sessions.create_api_token(uow, me, name="crash harness")[1]
        starts = [
            messaging.StartConversation((), f"hello {i} (client)", f"start-c-{i}", client_id),
            messaging.StartConversation((colleague,), f"hello {i} (team)", f"start-t-{i}"),
        ]
        for cmd in starts[: conversations - len(lanes)]:
            with unit_of_work(db) as uow:
                conv = messaging.start_conversation(uow, me, cmd).conversation.id
            lanes.append(Lane(conv, mid, token))
    return Seeded(pid, lanes)


# --- the server process --------------------------------------------------------------------


@dataclass
class Server:
    """`confide serve` on `port`, on the data folder or database of `env`."""

    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    start_seconds: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until /healthz answers (same data, same port)."""
        assert self.proc is None or self.proc.poll() is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
        env.update(self.env)
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    CONFIDE,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"confide serve exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    self.starts += 1
                    self.start_seconds.append(time.monotonic() - t0)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"confide serve did not start in {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no last commit, no checkpoint."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


# --- the load generator --------------------------------------------------------------------


@dataclass
class Send:
    lane: Lane
    n: int
    key: str
    text: str
    attempts: int = 0
    message_id: int | None = None
    seq: int | None = None


@dataclass
class Figures:
    offered: int = 0  # sends started (each with its own key)
    acknowledged: int = 0  # sends answered 200/201
    attempts: int = 0  # HTTP attempts in all
    retries: int = 0  # attempts after the first
    replays: int = 0  # acknowledged with 200: the key was stored by an earlier attempt
    transport_errors: int = 0  # refused, reset, timed out (no answer)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # transport errors by type
    server_kills: int = 0
    backend_kills: int = 0  # PostgreSQL backends terminated
    backend_kill_rounds: int = 0
    unexpected: list[str] = field(default_factory=list)  # answers that fail the test
    seconds: float = 0.0

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        errors = ", ".join(f"{k}: {v}" for k, v in self.errors.most_common())
        return (
            f"offered {self.offered}, acknowledged {self.acknowledged}, attempts "
            f"{self.attempts} (retries {self.retries}, replays {self.replays}, transport "
            f"errors {self.transport_errors} {{{errors}}}), statuses {{{codes}}}, server kills "
            f"{self.server_kills}, PostgreSQL backends terminated {self.backend_kills} "
            f"in {self.backend_kill_rounds} rounds, {self.seconds:.1f} s"
        )


class LoadGenerator:
    """Offers `rate` sends a second over the lanes for `seconds`, then waits (up to
    `drain_seconds`) until every send is acknowledged."""

    def __init__(
        self,
        server: Server,
        lanes: list[Lane],
        *,
        rate: float,
        seconds: float,
        drain_seconds: float = 90.0,
        max_connections: int = 8,
        request_timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.lanes = lanes
        self.rate = rate
        self.seconds = seconds
        self.drain_seconds = drain_seconds
        self.limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.timeout = httpx.Timeout(request_timeout, pool=None)
        # At most one request per pooled connection is handed to httpx: its pool looks
        # at every waiting request whenever a connection frees up, which costs a core
        # when a restart leaves a thousand sends waiting.
        self.in_flight = asyncio.Semaphore(max_connections)
        self.sends: list[Send] = []
        self.figures = Figures()
        self.up = asyncio.Event()
        self.acked_since_start = 0
        self._probe: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.sending = True
        self.drained = False

    # The server is believed down after a transport error; one probe polls /healthz and
    # lets the waiting senders go when it answers.
    def _down(self) -> None:
        if self.up.is_set():
            self.up.clear()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._wait_healthy())

    async def _wait_healthy(self) -> None:
        assert self._client is not None
        while True:
            try:
                r = await self._client.get("/healthz", timeout=1.0)
                if r.status_code == 200:
                    self.up.set()
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)

    async def _deliver(self, send: Send) -> None:
        assert self._client is not None
        f = self.figures
        body = {"text": send.text, "idempotency_key": send.key}
        headers = {"Authorization": f"Bearer {send.lane.token}"}
        url = f"/api/v1/conversations/{send.lane.conversation_id}/messages"
        backoff = 0.1
        while True:
            await self.up.wait()
            try:
                async with self.in_flight:
                    if not self.up.is_set():
                        continue  # went down while this send queued: wait for the probe
                    send.attempts += 1
                    f.attempts += 1
                    if send.attempts > 1:
                        f.retries += 1
                    r = await self._client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:
                f.transport_errors += 1
                f.errors[type(exc).__name__] += 1
                self._down()
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 1.0)
                continue
            f.statuses[r.status_code] += 1
            if r.status_code in ACKED:
                msg = r.json()["message"]
                if msg["text"] != send.text:
                    f.unexpected.append(f"{send.key}: acknowledged with another text")
                send.message_id, send.seq = int(msg["id"]), int(msg["seq"])
                f.acknowledged += 1
                self.acked_since_start += 1
                if r.status_code == 200:
                    f.replays += 1
                return
            if r.status_code in RETRYABLE:
                wait = _retry_after(r) or backoff
                await asyncio.sleep(wait * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 1.0)
                continue
            # A 500 (or any other answer) is a failure of the test, and the send is
            # not acknowledged: record it, stop retrying this one.
            f.unexpected.append(f"{send.key}: HTTP {r.status_code} {r.text[:200]}")
            return

    async def run(
        self,
        *faults: Callable[["LoadGenerator"], Awaitable[None]],
        background: tuple[Callable[["LoadGenerator"], Awaitable[None]], ...] = (),
    ) -> Figures:
        """Send for `self.seconds`, with the fault injectors running beside the senders.
        `faults` end by themselves (a plan of kills that may run into the drain on a slow
        machine); `background` ones stop when sending stops, so that the last sends
        show the server recovered. Then every send is driven home (`drain_seconds`)."""
        self.up.set()
        t0 = time.monotonic()
        async with httpx.AsyncClient(
            base_url=self.server.base, limits=self.limits, timeout=self.timeout
        ) as client:
            self._client = client
            finite = [asyncio.create_task(fault(self)) for fault in faults]
            endless = [asyncio.create_task(fault(self)) for fault in background]
            total = int(self.rate * self.seconds)
            per_lane: Counter[int] = Counter()
            for i in range(total):
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lane = self.lanes[i % len(self.lanes)]
                per_lane[lane.conversation_id] += 1
                n = per_lane[lane.conversation_id]
                key = f"{KEY_PREFIX}{lane.conversation_id}-{n}"
                send = Send(lane, n, key, f"crash test {lane.conversation_id} #{n}")
                self.sends.append(send)
                self.figures.offered += 1
                self._tasks.append(asyncio.create_task(self._deliver(send)))
            self.sending = False
            await _cancel(endless)
            deadline = time.monotonic() + self.drain_seconds
            done, pending = await asyncio.wait([*self._tasks, *finite], timeout=self.drain_seconds)
            await _cancel(list(pending))
            for task in done:
                task.result()  # a harness bug must not pass silently
            if self._probe is not None:
                await _cancel([self._probe])
            self.drained = time.monotonic() < deadline and not pending
        self.figures.seconds = time.monotonic() - t0
        return self.figures

    def pending(self) -> int:
        return sum(1 for t in self._tasks if not t.done())

    def unacknowledged(self) -> list[Send]:
        return [s for s in self.sends if s.message_id is None]


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return min(float(r.headers["retry-after"]), 2.0)
    except (KeyError, ValueError):
        return None


def server_killer(
    kill_at: list[float], *, min_acks: int = 50
) -> Callable[[LoadGenerator], Awaitable[None]]:
    """SIGKILL the server at each of `kill_at` (seconds from the start of sending), and
    start it again on the same data and port. A kill waits until the running server has
    acknowledged `min_acks` sends since it started, so that every kill lands on a server
    under load; on a slow machine the plan runs late, into the drain (sends keep coming
    while the server restarts, so there is a backlog to kill it under). It gives up only
    when nothing is left to send."""

    async def run(gen: LoadGenerator) -> None:
        t0 = time.monotonic()
        for at in sorted(kill_at):
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            while gen.acked_since_start < min_acks:
                if not gen.sending and gen.pending() == 0:
                    return
                await asyncio.sleep(0.05)
            gen.server.kill()
            gen.figures.server_kills += 1
            gen.acked_since_start = 0
            await asyncio.to_thread(gen.server.start)

    return run


def backend_killer(
    terminate: Callable[[], int], *, every: tuple[float, float]
) -> Callable[[LoadGenerator], Awaitable[None]]:
    """At random intervals in `every` seconds, while the server is up and sending,
    call `terminate` (which ends the server's database connections and says how many)."""

    async def run(gen: LoadGenerator) -> None:
        while True:
            await asyncio.sleep(random.uniform(*every))
            await gen.up.wait()
            if gen.server.proc is None or gen.server.proc.poll() is not None:
                continue
            gen.figures.backend_kills += await asyncio.to_thread(terminate)
            gen.figures.backend_kill_rounds += 1

    return run


# --- what the database holds ---------------------------------------------------------------


@dataclass
class Findings:
    stored: int = 0  # harness messages in the database
    lost: list[str] = field(default_factory=list)  # acknowledged, not stored as acknowledged
    duplicate_keys: list[str] = field(default_factory=list)
    duplicate_texts: list[str] = field(default_factory=list)
    phantoms: list[str] = field(default_factory=list)  # stored, never offered
    gaps: list[str] = field(default_factory=list)  # conversations whose seq is not 1..N
    audit: list[str] = field(default_factory=list)  # messages without exactly one audit row

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicate_keys
            or self.duplicate_texts
            or self.phantoms
            or self.gaps
            or self.audit
        )


def check_database(runtime: Runtime, seeded: Seeded, sends: list[Send]) -> Findings:
    """Read every message of the practice (and its audit rows) in one unit of work."""
    pid = seeded.practice_id
    out = Findings()
    with unit_of_work(runtime.db) as uow:
        ensure_data_key(uow.conn, runtime.db.keys, pid)  # as a fresh process loads it
        rows = uow.conn.execute(
            select(
                MessageRow.id,
                MessageRow.conversation_id,
                MessageRow.seq,
                MessageRow.sender_kind,
                MessageRow.sender_id,
                MessageRow.idempotency_key,
                MessageRow.body,
            ).where(MessageRow.practice_id == pid)
        ).all()
        last_seq = dict(
            uow.conn.execute(
                select(ConversationRow.id, ConversationRow.last_seq).where(
                    ConversationRow.practice_id == pid
                )
            ).all()
        )
        audited = Counter(
            uow.conn.execute(
                select(AuditRow.target_id).where(
                    AuditRow.chain_id == pid,
                    AuditRow.action == "message.sent",
                    AuditRow.target_kind == "message",
                )
            ).scalars()
        )
    keys = runtime.db.keys
    by_id = {}
    key_count: Counter[tuple[str, int, str]] = Counter()
    text_count: Counter[str] = Counter()
    seqs: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        text = keys.decrypt(pid, r.body, message_aad(pid, r.conversation_id, r.seq))
        by_id[r.id] = (r.conversation_id, r.seq, r.idempotency_key, text)
        key_count[(r.sender_kind, r.sender_id, r.idempotency_key)] += 1
        text_count[text] += 1
        seqs[r.conversation_id].append(r.seq)
        if audited[r.id] != 1:
            out.audit.append(f"message {r.id}: {audited[r.id]} message.sent audit rows")
    offered = {s.key for s in sends}
    out.stored = sum(1 for v in by_id.values() if v[2].startswith(KEY_PREFIX))
    out.phantoms = [
        v[2] for v in by_id.values() if v[2].startswith(KEY_PREFIX) and v[2] not in offered
    ]
    for s in sends:
        if s.message_id is None:
            continue
        want = (s.lane.conversation_id, s.seq, s.key, s.text)
        if by_id.get(s.message_id) != want:
            out.lost.append(f"{s.key}: acknowledged as message {s.message_id} seq {s.seq}")
    out.duplicate_keys = [f"{k[2]} x{n}" for k, n in key_count.items() if n > 1]
    out.duplicate_texts = [f"{t[:40]!r} x{n}" for t, n in text_count.items() if n > 1]
    for lane in seeded.lanes:
        got = sorted(seqs.get(lane.conversation_id, []))
        want_seqs = list(range(1, len(got) + 1))
        if got != want_seqs or last_seq.get(lane.conversation_id) != len(got):
            out.gaps.append(
                f"conversation {lane.conversation_id}: {len(got)} messages, "
                f"last_seq {last_seq.get(lane.conversation_id)}, "
                f"missing {sorted(set(want_seqs) - set(got))[:10]}"
            )
    return out


def audit_problems(runtime: Runtime) -> list[str]:
    """What `confide audit verify` reports: the hash chains recomputed (store/repos/audit.py)."""
    with runtime.db.engine.connect() as conn:
        report = verify_chains(conn, runtime.db.keys)
    return [f"chain {p.chain_id} seq {p.seq}: {p.problem}" for p in report.problems]


@dataclass
class OwnDatabase:
    url: str  # "" for SQLite in the test's data folder
    name: str = ""
    admin: Engine | None = None  # connected to another database of the same server

    def terminate_backends(self) -> int:
        """Ends every connection to the database (from the admin connection, which is
        to another database): the server's pool and its background loops, whatever they
        are doing (idle, in a transaction, in a COMMIT). Returns how many ended."""
        assert self.admin is not None
        with self.admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": self.name},
                ).all()
            )

    def allow_connections(self, allow: bool) -> None:
        assert self.admin is not None
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {allow}'))


@contextlib.contextmanager
def own_database(prefix: str) -> Iterator[OwnDatabase]:
    """SQLite in the test's data folder (""), or, when the suite runs on PostgreSQL, a
    database of the test's own (`prefix` + a random part) next to
    CONFIDE_TEST_POSTGRES_URL, dropped after (connections allowed again first, in case
    the test refused them)."""
    if os.environ.get("CONFIDE_TEST_DATABASE") != "postgres":
        yield OwnDatabase("")
        return
    base = os.environ.get("CONFIDE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("CONFIDE_TEST_POSTGRES_URL is not set")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield OwnDatabase(base.rsplit("/", 1)[0] + "/" + name, name, admin)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
