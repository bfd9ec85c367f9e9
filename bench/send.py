"""The send path over HTTP against the real server (`confide serve`, a subprocess).

- the empty endpoint (GET /healthz) at the target concurrency, for scale;
- saturation: N concurrent senders (a keep-alive connection, member token and
  conversation each) POST 200-character messages with unique idempotency keys, as
  fast as answers come back (wrk), at the target concurrency (50) and at lower ones;
- fixed rate (open loop): messages due at a steady rate, latency counted from when
  each was due (so queueing in the server shows), at the target rate over the target
  concurrency, and at half the measured capacity over 16 connections;
- the server's peak resident memory per phase (VmHWM after a reset; VmRSS sampled).

After every send phase the stored rows are counted: messages, `message.sent` audit
rows and `message.created` outbox rows must each have grown by the number of 201
answers. After every phase the server must still answer /healthz within 3 s; a server
that does not is recorded as wedged (with a thread dump when py-spy is on PATH) and
restarted for the next phase.

In process (no HTTP): `messaging.send_message` through a unit of work in one thread,
with the number of SQL statements per send: the ceiling the HTTP figures are under.
"""

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import event

from bench.loadgen import (
    LoadResult,
    have_wrk,
    run_closed_loop,
    run_open_loop,
    run_wrk,
    wrk_get_script,
    wrk_send_script,
)
from bench.seed import Seeded, Sender, message_text, open_runtime
from bench.server import RssSampler, Server
from confide.domain.actors import Actor, Party, Via
from confide.realtime.frames import EVENT_KINDS
from confide.services import messaging
from confide.store.uow import relay_at_commit, unit_of_work

Log = Callable[[str], None]


@dataclass
class RowCounts:
    messages: int
    audit_sent: int
    outbox_created: int


def count_rows(seeded: Seeded, key_prefix: str) -> RowCounts:
    """Messages whose idempotency key starts with `key_prefix` (one phase's), and the
    `message.sent` audit rows and `message.created` outbox rows naming them; read in
    one snapshot, straight from the database file."""
    db = Path(seeded.data_dir) / "confide.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    pid = seeded.practice_id
    ids = "SELECT id FROM messages WHERE practice_id=:pid AND substr(idempotency_key, 1, :n) = :p"
    args = {"pid": pid, "n": len(key_prefix), "p": key_prefix}
    try:
        conn.execute("BEGIN")
        (m,) = conn.execute(f"SELECT count(*) FROM ({ids})", args).fetchone()  # noqa: S608
        audit = "SELECT count(*) FROM audit_log WHERE chain_id=:pid AND action='message.sent' "
        audit += f"AND target_kind='message' AND target_id IN ({ids})"
        (a,) = conn.execute(audit, args).fetchone()
        outbox = "SELECT count(*) FROM outbox WHERE practice_id=:pid AND kind='message.created' "
        outbox += f"AND json_extract(payload, '$.message_id') IN ({ids})"
        (o,) = conn.execute(outbox, args).fetchone()
        conn.execute("COMMIT")
        return RowCounts(m, a, o)
    finally:
        conn.close()


def settled_counts(seeded: Seeded, key_prefix: str, wait: float = 5.0) -> RowCounts:
    """Counts once requests still in flight when the load generator stopped are done."""
    last = count_rows(seeded, key_prefix)
    end = time.monotonic() + wait
    while time.monotonic() < end:
        time.sleep(0.3)
        now = count_rows(seeded, key_prefix)
        if now == last:
            return now
        last = now
    return last


@dataclass
class Phase:
    name: str
    connections: int
    load: LoadResult
    server_cpu_s: float
    alive_after: bool
    rss_hwm_kb: int = 0  # peak during the phase (VmHWM reset at its start)
    rss_sampled_kb: int = 0
    stored: RowCounts | None = None  # rows of the phase's messages (send phases)
    stuck_dump: str = ""  # where the thread dump of a wedged server went

    @property
    def created(self) -> int:
        return self.load.ok(201)

    @property
    def unanswered_stored(self) -> int:
        """Messages stored whose 201 the load generator never read: requests still in
        flight when it stopped (at most one per connection) or timed out."""
        return self.stored.messages - self.created if self.stored else 0

    @property
    def verified(self) -> bool | None:
        """Every 201 stored with its audit and outbox row; nothing stored beyond what
        was in flight when the load generator stopped."""
        if self.stored is None:
            return None
        s = self.stored
        slack = self.connections + self.load.errors
        return s.messages == s.audit_sent == s.outbox_created and (
            0 <= self.unanswered_stored <= slack
        )

    @property
    def server_cpu_ms_per_request(self) -> float:
        n = self.load.requests
        return 1000 * self.server_cpu_s / n if n else float("nan")

    @property
    def rss_peak_kb(self) -> int:
        return max(self.rss_hwm_kb, self.rss_sampled_kb)


@dataclass
class InProcess:
    sends: int
    seconds: float
    statements_per_send: float

    @property
    def rate(self) -> float:
        return self.sends / self.seconds

    @property
    def ms_per_send(self) -> float:
        return 1000 * self.seconds / self.sends


@dataclass
class SendResults:
    load_tool: str
    target_connections: int
    phases: list[Phase] = field(default_factory=list)
    rss_idle_kb: int = 0
    inprocess: InProcess | None = None

    def get(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def saturation(self) -> list[Phase]:
        return [p for p in self.phases if p.name.startswith("send c=")]


def inprocess_send(seeded: Seeded, *, sends: int) -> InProcess:
    """`messaging.send_message` in a loop, one unit of work each, one thread: the
    service and store alone, no HTTP, no contention."""
    runtime = open_runtime(seeded)
    statements = 0
    counting = False

    def count(_sql: str) -> None:
        nonlocal statements
        if counting:
            statements += 1

    # Counted by SQLite itself (a trace callback on every connection): the send path's
    # statements run on the driver's cursor (store/hot.py) and fire no engine events.
    # An executemany counts once per row.
    def on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.set_trace_callback(count)

    event.listen(runtime.db.engine, "connect", on_connect)
    runtime.db.engine.dispose()  # connections made before the listener: closed
    # As `serve` runs it: each commit relays its own events (jobs/outbox.py).
    stop_relay = relay_at_commit(runtime.db, EVENT_KINDS, lambda _position: None, limit=500)

    try:
        s = seeded.senders[0]
        actor = Actor(seeded.practice_id, Party.member(s.member_id), Via.API_TOKEN)
        tag = f"inproc-{time.time_ns()}-"

        def one(i: int) -> None:
            with unit_of_work(runtime.db) as uow:
                messaging.send_message(
                    uow,
                    actor,
                    messaging.SendMessage(s.conversation_id, message_text(i), f"{tag}{i}"),
                )

        for i in range(20):  # warm the statement cache
            one(-1 - i)
        counting = True
        t0 = time.perf_counter()
        for i in range(sends):
            one(i)
        elapsed = time.perf_counter() - t0
        counting = False
        return InProcess(sends, elapsed, statements / sends)
    finally:
        stop_relay()
        runtime.close()


def _thread_dump(server: Server, out: Path) -> str:
    spy = shutil.which("py-spy")
    if spy is None:
        return ""
    try:
        r = subprocess.run(
            [spy, "dump", "--pid", str(server.pid)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    out.write_text(r.stdout + r.stderr)
    return str(out)


def run_send_benchmarks(
    seeded: Seeded,
    server: Server,
    *,
    seconds: float,
    sweep: tuple[int, ...] = (1, 8, 16),
    fixed_rate: float = 500.0,
    fixed_seconds: float = 10.0,
    fixed_grace: float = 5.0,
    half_capacity_run: bool = True,
    workdir: Path,
    log: Log = print,
) -> SendResults:
    target = len(seeded.senders)
    run_id = f"b{int(time.time())}-"
    use_wrk = have_wrk()
    res = SendResults(
        load_tool="wrk 4 (one thread per connection)"
        if use_wrk
        else "asyncio closed loop (wrk not installed)",
        target_connections=target,
    )
    host = "127.0.0.1"

    def saturate(senders: list[Sender], get_path: str, secs: float, prefix: str) -> LoadResult:
        if use_wrk:
            script = wrk_get_script() if get_path else wrk_send_script(senders, prefix)
            url = server.base + (get_path or "/")
            n = len(senders)
            return run_wrk(url, connections=n, threads=n, seconds=secs, script=script)
        return run_closed_loop(
            host, server.port, senders, seconds=secs, prefix=prefix, get_path=get_path
        )

    def phase(name: str, conns: int, run: Callable[[], LoadResult], key: str | None) -> Phase:
        server.reset_peak()
        cpu0 = server.cpu_seconds()
        with RssSampler(server) as sampler:
            load = run()
        cpu = server.cpu_seconds() - cpu0
        hwm = server.status_kb("VmHWM")
        alive = server.alive()
        p = Phase(name, conns, load, cpu, alive, hwm, sampler.peak_kb)
        if not alive:
            safe = name.replace(" ", "_").replace("/", "_").replace("=", "")
            p.stuck_dump = _thread_dump(server, workdir / f"wedged-{safe}.txt")
            log(f"  !! server wedged after '{name}' (no /healthz answer in 3 s); restarting")
            server.restart()
        if key is not None:
            p.stored = settled_counts(seeded, key)
        res.phases.append(p)
        return p

    res.rss_idle_kb = server.status_kb("VmRSS")
    log(f"server idle: RSS {res.rss_idle_kb / 1024:.0f} MB")

    # the empty endpoint, same stack, target concurrency
    saturate(seeded.senders, "/healthz", 1, "")
    p = phase(
        f"healthz c={target}",
        target,
        lambda: saturate(seeded.senders, "/healthz", seconds, ""),
        None,
    )
    log(f"GET /healthz c={target}: {p.load.rate:,.0f} req/s, p99 {p.load.p99_ms:.1f} ms")

    # saturation: lower concurrencies first (they do not wedge the server), then target
    saturate(seeded.senders[:4], "", 1, run_id + "w")  # warm-up, counted in no phase
    for c in (*[c for c in sweep if c < target], target):
        senders = seeded.senders[:c]
        p = phase(
            f"send c={c}",
            c,
            lambda s=senders, c=c: saturate(s, "", seconds, f"{run_id}s{c}-"),  # type: ignore[misc]
            f"{run_id}s{c}-",
        )
        log(
            f"POST message c={c}: {p.load.rate:,.0f} msg/s, p50 {p.load.p50_ms:.1f} ms, "
            f"p99 {p.load.p99_ms:.1f} ms, 201s {p.created}, stored {p.stored}, "
            f"RSS peak {p.rss_peak_kb / 1024:.0f} MB, alive {p.alive_after}"
        )

    # fixed rate, open loop, target concurrency
    p = phase(
        f"fixed {fixed_rate:.0f}/s c={target}",
        target,
        lambda: run_open_loop(
            host,
            server.port,
            seeded.senders,
            rate=fixed_rate,
            seconds=fixed_seconds,
            prefix=f"{run_id}f-",
            grace=fixed_grace,
        ),
        f"{run_id}f-",
    )
    log(
        f"POST message at {fixed_rate:.0f}/s (open loop, c={target}): answered "
        f"{p.load.requests} of {int(fixed_rate * fixed_seconds)}, p50 {p.load.p50_ms:.1f} ms, "
        f"p99 {p.load.p99_ms:.1f} ms, missed {p.load.missed}, alive {p.alive_after}"
    )

    if half_capacity_run:
        best = max((q.load.rate for q in res.saturation() if q.alive_after), default=0.0)
        rate = max(5.0, round(best / 2 / 5) * 5)
        conns = min(16, target)
        p = phase(
            f"fixed {rate:.0f}/s c={conns}",
            conns,
            lambda: run_open_loop(
                host,
                server.port,
                seeded.senders[:conns],
                rate=rate,
                seconds=fixed_seconds,
                prefix=f"{run_id}h-",
                grace=fixed_grace,
            ),
            f"{run_id}h-",
        )
        log(
            f"POST message at {rate:.0f}/s (half the best saturation rate, open loop, "
            f"c={conns}): p50 {p.load.p50_ms:.1f} ms, p99 {p.load.p99_ms:.1f} ms, "
            f"missed {p.load.missed}"
        )
    return res
