"""Real-time delivery against a real `confide serve` (docs/realtime.md).

    python -m bench.run --only realtime      # this section alone, into docs/benchmarks.md

Two measurements, never assertions:

- **Delivery latency.** `sockets` WebSocket clients, each signed in with its own session
  cookie, spread round-robin over every participant of the seeded sender conversations
  (so each socket receives the messages of its conversations), held by `procs` client
  processes (asyncio + `websockets`). A sender in this process posts messages over HTTP
  at a fixed rate, open loop (message k is due at t0 + k/rate, on the connection of
  sender k mod n, each with its own token and conversation, as bench/loadgen.py does).
  Latency runs from when each send was due to the arrival of the matching
  `message.created` frame at each recipient socket (every delivery counts; the first
  socket per message is shown too). The clock is CLOCK_MONOTONIC, shared by all
  processes of the machine. Where the time goes: the HTTP answer (201) time, and the
  delivery time after the 201 arrived (relay → event log → hub → socket).
- **Idle sockets.** A fresh server, then `idle_target` sockets opened and resumed (live)
  by several client processes; the server's VmRSS before and with them open, and the
  server CPU they cost while idle (the hub's per-second check of new or due sessions
  and of the log's head, protocol pings). File descriptors: this process raises
  RLIMIT_NOFILE to its hard limit before starting the server and the clients, which
  inherit it.

Sessions are inserted straight into the store (hashed, as `sessions.start_session`
writes them, without its audit row: benchmark data), a thousand to a transaction.
"""

import asyncio
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.loadgen import _Conn, percentile, post_bytes
from bench.seed import Seeded, message_text, open_runtime
from bench.server import RssSampler, Server
from confide.auth.tokens import new_token, token_hash
from confide.domain.actors import Party, PartyKind, Via
from confide.domain.ids import PracticeId
from confide.store.tables import ParticipantRow
from confide.store.uow import unit_of_work

COOKIE = "confide_session"  # demo mode over plain http (bench/server.py)
CONNECT_CONCURRENCY = 64  # handshakes in flight per client process
TAG = "rt"


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; children (server, clients) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- data -------------------------------------------------------------------------------


def conversation_parties(seeded: Seeded) -> dict[int, list[Party]]:
    """The participants of each sender conversation."""
    wanted = [s.conversation_id for s in seeded.senders]
    runtime = open_runtime(seeded)
    try:
        with unit_of_work(runtime.db, write=False) as uow:
            rows = uow.conn.execute(
                select(
                    ParticipantRow.conversation_id,
                    ParticipantRow.party_kind,
                    ParticipantRow.party_id,
                ).where(
                    ParticipantRow.practice_id == seeded.practice_id,
                    ParticipantRow.conversation_id.in_(wanted),
                )
            ).all()
    finally:
        runtime.close()
    out: dict[int, list[Party]] = {}
    for cid, kind, pid in rows:
        out.setdefault(int(cid), []).append(Party(PartyKind(kind), int(pid)))
    return out


def make_sessions(seeded: Seeded, parties: list[Party]) -> list[str]:
    """One new live session per entry of `parties` (session ids, as cookies carry them)."""
    runtime = open_runtime(seeded)
    ids: list[str] = []
    try:
        for i in range(0, len(parties), 1000):
            with unit_of_work(runtime.db) as uow:
                for party in parties[i : i + 1000]:
                    sid = new_token()
                    via = Via.PASSWORD if party.kind is PartyKind.MEMBER else Via.MAGIC_LINK
                    uow.sessions.insert_session(
                        PracticeId(seeded.practice_id), party, via, token_hash(sid)
                    )
                    ids.append(sid)
                uow.commit()
    finally:
        runtime.close()
    return ids


# -- client processes -------------------------------------------------------------------


async def _hold(
    port: int, sessions: list[str], pipe: Connection, record: bool, deflate: bool
) -> None:
    """Open and resume one socket per session, report how many are live, then read
    frames (recording `message.created` arrivals) until told to stop."""
    import websockets

    url = f"ws://127.0.0.1:{port}/api/v1/ws"
    origin = f"http://127.0.0.1:{port}"
    arrivals: list[tuple[str, int, float]] = []  # (key, socket index, monotonic time)
    failures: dict[str, int] = {}
    socks: list[Any] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    closed = 0

    async def reader(i: int, ws: Any) -> None:
        nonlocal closed
        try:
            async for data in ws:
                if record and '"message.created"' in data:
                    now = time.monotonic()
                    text = json.loads(data)["message"]["text"] or ""
                    if text.startswith(TAG):
                        arrivals.append((text.split("|", 1)[0], i, now))
        except Exception:  # noqa: S110 - the socket closed: counted below
            pass
        closed += 1

    async def open_one(i: int, sid: str) -> None:
        async with gate:
            try:
                ws = await websockets.connect(
                    url,
                    additional_headers={"Cookie": f"{COOKIE}={sid}", "Origin": origin},
                    open_timeout=60,
                    max_queue=None,
                    proxy=None,
                    compression="deflate" if deflate else None,  # browsers offer it
                )
                await ws.send('{"type":"resume","cursor":0}')
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if frame.get("type") == "ready":
                        break
            except Exception as exc:
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1
                return
            socks.append(ws)
            tasks.append(asyncio.create_task(reader(i, ws)))

    tasks: list[asyncio.Task[None]] = []
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i, sid) for i, sid in enumerate(sessions)))
    pipe.send(("live", len(socks), time.monotonic() - t0, failures))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    cpu = time.process_time()
    pipe.send(("done", arrivals, closed, cpu))
    for ws in socks:
        await ws.close()
    for t in tasks:
        t.cancel()


def _client_main(
    port: int, sessions: list[str], pipe: Connection, record: bool, deflate: bool
) -> None:
    raise_fd_limit()
    _run(_hold(port, sessions, pipe, record, deflate))


class Clients:
    """`procs` processes holding one socket per session each (sessions split evenly)."""

    def __init__(
        self, port: int, sessions: list[str], procs: int, *, record: bool, deflate: bool = True
    ) -> None:
        ctx = mp.get_context("spawn")
        self.parts = [sessions[i::procs] for i in range(procs)]
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for part in self.parts:
            here, there = ctx.Pipe()
            p = ctx.Process(
                target=_client_main, args=(port, part, there, record, deflate), daemon=True
            )
            p.start()
            self.pipes.append(here)
            self.procs.append(p)
        self.live = 0
        self.connect_seconds = 0.0
        self.failures: dict[str, int] = {}

    def wait_live(self, timeout: float) -> None:
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError("a client process did not report")
            _, n, secs, failures = pipe.recv()
            self.live += n
            self.connect_seconds = max(self.connect_seconds, secs)
            for k, v in failures.items():
                self.failures[k] = self.failures.get(k, 0) + v

    def stop(self) -> tuple[list[tuple[str, int, int, float]], int, float]:
        """Arrivals as (key, process, socket index, time); sockets closed early; CPU."""
        arrivals: list[tuple[str, int, int, float]] = []
        closed = 0
        cpu = 0.0
        for pipe in self.pipes:
            pipe.send("stop")
        for n, pipe in enumerate(self.pipes):
            if pipe.poll(120):
                _, got, c, secs = pipe.recv()
                arrivals += [(k, n, i, t) for k, i, t in got]
                closed += c
                cpu += secs
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        return arrivals, closed, cpu


# -- (a) delivery latency -------------------------------------------------------------------


@dataclass
class Delivery:
    name: str
    rate: float
    seconds: float
    sockets: int
    live: int
    procs: int
    connect_seconds: float
    due: int = 0
    answered: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    missed: int = 0
    errors: int = 0
    send_rate: float = 0.0
    expected: int = 0  # deliveries owed to live sockets for the answered messages
    delivered: int = 0
    closed_early: int = 0
    all_ms: tuple[float, float, float, float] = (float("nan"),) * 4  # p50 p90 p99 max
    first_ms: tuple[float, float] = (float("nan"),) * 2  # p50 p99
    http_ms: tuple[float, float] = (float("nan"),) * 2  # due → 201 read: p50 p99
    after_ms: tuple[float, float] = (float("nan"),) * 2  # 201 read → frame: p50 p99
    write_ms: tuple[float, float] = (float("nan"),) * 2  # request written → frame
    server_cpu_pct: float = 0.0
    client_cpu_s: float = 0.0
    rss_peak_kb: int = 0


def _ms(values: list[float], *ps: float) -> tuple[float, ...]:
    values.sort()
    return tuple(percentile(values, p) * 1000 for p in ps)


async def _send_open_loop(
    port: int, seeded: Seeded, *, rate: float, seconds: float, grace: float, tag: str
) -> tuple[dict[str, tuple[int, float, float, float]], dict[int, int], int, int]:
    """{key: (conversation, due, written, answered)}, statuses, errors, missed."""
    senders = seeded.senders
    n_total = int(rate * seconds)
    sent: dict[str, tuple[int, float, float, float]] = {}
    statuses: dict[int, int] = {}
    errors = missed = 0
    t0 = time.monotonic() + 0.2
    deadline = t0 + seconds + grace

    async def one(i: int) -> None:
        nonlocal errors, missed
        s = senders[i]
        conn = _Conn("127.0.0.1", port)
        path = f"/api/v1/conversations/{s.conversation_id}/messages"
        due = range(i, n_total, len(senders))
        try:
            for j, k in enumerate(due):
                at = t0 + k / rate
                now = time.monotonic()
                if now < at:
                    await asyncio.sleep(at - now)
                elif now > deadline:
                    missed += len(due) - j
                    return
                key = f"{tag}{k}"
                text = f"{key}|" + message_text(k, 180)
                body = json.dumps({"text": text, "idempotency_key": f"{tag}-{k}"}).encode()
                raw = post_bytes("127.0.0.1", port, path, s.token, body)
                written = time.monotonic()
                try:
                    status, _ = await asyncio.wait_for(
                        conn.request(raw), timeout=max(1.0, deadline - written)
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    errors += 1
                    missed += len(due) - j - 1
                    return
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    sent[key] = (s.conversation_id, at, written, time.monotonic())
        finally:
            conn.close()

    await asyncio.gather(*(one(i) for i in range(len(senders))))
    return sent, statuses, errors, missed


def delivery(
    seeded: Seeded,
    server: Server,
    *,
    sockets: int,
    procs: int,
    phases: list[tuple[float, float]],  # (rate, seconds)
    grace: float,
    log: Callable[[str], None],
) -> list[Delivery]:
    parties_of = conversation_parties(seeded)
    parties = sorted({p for ps in parties_of.values() for p in ps}, key=str)
    assigned = [parties[i % len(parties)] for i in range(sockets)]
    t = time.monotonic()
    sids = make_sessions(seeded, assigned)
    log(
        f"realtime: {len(sids):,} sessions for {len(parties)} parties "
        f"in {time.monotonic() - t:.1f} s"
    )
    party_of_sid = dict(zip(sids, assigned, strict=True))
    clients = Clients(server.port, sids, procs, record=True)
    results: list[Delivery] = []
    sents: list[dict[str, tuple[int, float, float, float]]] = []
    try:
        clients.wait_live(timeout=300)
        log(
            f"realtime: {clients.live:,}/{sockets:,} sockets live "
            f"in {clients.connect_seconds:.1f} s"
            + (f"; failures {clients.failures}" if clients.failures else "")
        )
        # Which sockets (process, index) are owed each conversation's messages.
        per_conv: dict[int, int] = {}
        for part in clients.parts:
            for sid in part:
                for cid, ps in parties_of.items():
                    if party_of_sid[sid] in ps:
                        per_conv[cid] = per_conv.get(cid, 0) + 1
        for n, (rate, seconds) in enumerate(phases):
            tag = f"{TAG}{n}x"
            res = Delivery(
                name=f"{rate:.0f} messages/s",
                rate=rate,
                seconds=seconds,
                sockets=sockets,
                live=clients.live,
                procs=procs,
                connect_seconds=clients.connect_seconds,
            )
            cpu0 = server.cpu_seconds()
            w0 = time.monotonic()
            server.reset_peak()
            with RssSampler(server) as rss:
                sent, statuses, errors, missed = _run(
                    _send_open_loop(
                        server.port, seeded, rate=rate, seconds=seconds, grace=grace, tag=tag
                    )
                )
                settle(server)  # frames still in flight
            res.server_cpu_pct = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - w0)
            res.rss_peak_kb = rss.peak_kb
            res.due = int(rate * seconds)
            res.answered = len(sent)
            res.statuses, res.errors, res.missed = statuses, errors, missed
            span = max((v[3] for v in sent.values()), default=0) - min(
                (v[1] for v in sent.values()), default=0
            )
            res.send_rate = len(sent) / span if span > 0 else 0.0
            results.append(res)
            log(
                f"realtime {res.name}: {len(sent):,} answered of {res.due:,} due "
                f"({res.send_rate:,.0f}/s), {missed:,} never sent"
            )
            res.expected = sum(per_conv.get(v[0], 0) for v in sent.values())
            sents.append(sent)
        arrivals, closed, cpu = clients.stop()
    finally:
        for p in clients.procs:
            if p.is_alive():
                p.kill()
    for res, sent in zip(results, sents, strict=True):
        lat_all: list[float] = []
        after: list[float] = []
        from_write: list[float] = []
        first: dict[str, float] = {}
        for key, _proc, _i, at in arrivals:
            s = sent.get(key)
            if s is None:
                continue
            _cid, due, written, answered = s
            lat_all.append(at - due)
            after.append(at - answered)
            from_write.append(at - written)
            first[key] = min(first.get(key, at), at)
        res.delivered = len(lat_all)
        res.closed_early = closed
        res.client_cpu_s = cpu
        p = _ms(lat_all, 50, 90, 99, 100)
        res.all_ms = (p[0], p[1], p[2], p[3])
        f = _ms([t - sent[k][1] for k, t in first.items()], 50, 99)
        res.first_ms = (f[0], f[1])
        h = _ms([v[3] - v[1] for v in sent.values()], 50, 99)
        res.http_ms = (h[0], h[1])
        a = _ms(after, 50, 99)
        res.after_ms = (a[0], a[1])
        w = _ms(from_write, 50, 99)
        res.write_ms = (w[0], w[1])
        log(
            f"realtime {res.name}: delivery p50 {res.all_ms[0]:.1f} ms, p99 {res.all_ms[2]:.1f} ms "
            f"over {res.delivered:,}/{res.expected:,} deliveries; 201 p50 {res.http_ms[0]:.1f} "
            f"ms; after the 201 p50 {res.after_ms[0]:.1f} ms"
        )
    return results


def settle(server: Server, *, quiet_pct: float = 15.0, most: float = 30.0) -> None:
    """Wait (2 s at least, `most` at most) until the server's CPU over half a second
    falls under `quiet_pct` of a core: the frames of the last sends have gone out."""
    time.sleep(2.0)
    end = time.monotonic() + most
    while time.monotonic() < end:
        c0, w0 = server.cpu_seconds(), time.monotonic()
        time.sleep(0.5)
        if 100 * (server.cpu_seconds() - c0) / (time.monotonic() - w0) < quiet_pct:
            return


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


# -- (b) idle sockets ----------------------------------------------------------------------


@dataclass
class Idle:
    target: int
    procs: int
    fd_limit: int
    deflate: bool
    live: int = 0
    connect_seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    rss_empty_kb: int = 0
    rss_open_kb: int = 0
    rss_peak_kb: int = 0
    idle_cpu_pct: float = 0.0  # server CPU while the sockets sit idle
    idle_seconds: float = 0.0
    closed_early: int = 0
    note: str = ""

    @property
    def kb_per_socket(self) -> float:
        return (self.rss_open_kb - self.rss_empty_kb) / self.live if self.live else float("nan")


def idle(
    seeded: Seeded,
    server: Server,
    *,
    target: int,
    procs: int,
    idle_seconds: float,
    deflate: bool,
    log: Callable[[str], None],
) -> Idle:
    """`server` freshly started, nothing connected yet."""
    fd_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    res = Idle(
        target=target, procs=procs, fd_limit=fd_soft, deflate=deflate, idle_seconds=idle_seconds
    )
    parties = sorted({p for ps in conversation_parties(seeded).values() for p in ps}, key=str)
    t = time.monotonic()
    sids = make_sessions(seeded, [parties[i % len(parties)] for i in range(target)])
    log(f"idle: {len(sids):,} sessions in {time.monotonic() - t:.1f} s")
    time.sleep(2.0)
    res.rss_empty_kb = server.status_kb("VmRSS")
    server.reset_peak()
    clients = Clients(server.port, sids, procs, record=False, deflate=deflate)
    try:
        clients.wait_live(timeout=900)
        res.live, res.connect_seconds = clients.live, clients.connect_seconds
        res.failures = clients.failures
        log(
            f"idle: {res.live:,}/{target:,} sockets live in {res.connect_seconds:.1f} s"
            + (f"; failures {res.failures}" if res.failures else "")
        )
        time.sleep(2.0)
        cpu0, w0 = server.cpu_seconds(), time.monotonic()
        time.sleep(idle_seconds)
        res.idle_cpu_pct = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - w0)
        res.rss_open_kb = server.status_kb("VmRSS")
        res.rss_peak_kb = server.status_kb("VmHWM")
        _, res.closed_early, _ = clients.stop()
    finally:
        for p in clients.procs:
            if p.is_alive():
                p.kill()
    if res.live < target:
        res.note = (
            f"{target - res.live:,} sockets never went live "
            f"({', '.join(f'{k}: {v}' for k, v in res.failures.items()) or 'no error reported'}; "
            f"RLIMIT_NOFILE {fd_soft:,})"
        )
    log(
        f"idle: server RSS {res.rss_empty_kb / 1024:.0f} MB empty, {res.rss_open_kb / 1024:.0f} "
        f"MB with {res.live:,} sockets ({res.kb_per_socket:.1f} KB each); idle CPU "
        f"{res.idle_cpu_pct:.1f} % of a core"
    )
    return res


# -- the doc section ---------------------------------------------------------------------

TARGET_P50_MS = 5.0
TARGET_P99_MS = 25.0
TARGET_IDLE = 10_000
TARGET_IDLE_RSS_MB = 300.0

SECTION = "## Real-time delivery"


def fmt(x: float) -> str:
    if x != x:
        return "–"
    return f"{x:.2f}" if x < 10 else (f"{x:,.1f}" if x < 100 else f"{x:,.0f}")


def target_rows(deliveries: list[Delivery], idles: list[Idle]) -> list[str]:
    rows: list[str] = []
    top = max(deliveries, key=lambda d: d.rate, default=None)
    if top:
        ok = top.all_ms[0] < TARGET_P50_MS and top.all_ms[2] < TARGET_P99_MS and not top.missed
        rows.append(
            f"| delivery at {top.rate:.0f} messages/s with {top.sockets:,} sockets: p50 < "
            f"{TARGET_P50_MS:.0f} ms, p99 < {TARGET_P99_MS:.0f} ms | p50 {fmt(top.all_ms[0])} ms, "
            f"p99 {fmt(top.all_ms[2])} ms over {top.delivered:,} deliveries; the server answered "
            f"{top.send_rate:,.0f} sends/s, {top.missed:,} of {top.due:,} never sent | "
            f"{'yes' if ok else '**no**'} |"
        )
    for idle_res in idles[:1]:  # as browsers connect: permessage-deflate offered
        mb = idle_res.rss_open_kb / 1024
        ok = idle_res.live >= TARGET_IDLE and mb < TARGET_IDLE_RSS_MB
        rows.append(
            f"| {TARGET_IDLE:,} idle sockets, server RSS < {TARGET_IDLE_RSS_MB:.0f} MB | "
            f"{idle_res.live:,} live, RSS {mb:.0f} MB ({idle_res.kb_per_socket:.1f} KB per "
            f"socket over {idle_res.rss_empty_kb / 1024:.0f} MB empty) | "
            f"{'yes' if ok else '**no**'} |"
        )
    return rows


def section(deliveries: list[Delivery], idles: list[Idle], *, data: str) -> str:
    lines: list[str] = []
    add = lines.append
    add(SECTION)
    add("")
    add(
        "`bench/realtime.py` against `confide serve` (one process, SQLite WAL), "
        f"{data}. Every socket has its own session cookie and is spread round-robin over "
        "the participants of the sender conversations; client sockets are held by "
        "separate processes (asyncio + `websockets`) on the same 2-core machine as the "
        "server. A sender posts over HTTP, open loop (50 connections, one per sender "
        "token and conversation). *delivery*: from when a send was due to the "
        "`message.created` frame at each recipient socket; *first*: the first socket per "
        "message; *201*: due → HTTP answer; *after 201*: the answer → the frame (relay, "
        "event log, hub, socket); *from write*: the request written → the frame. "
        "Measurements only."
    )
    add("")
    add("| target | measured | met |")
    add("|---|---|---|")
    lines += target_rows(deliveries, idles)
    add("")
    if deliveries:
        d0 = deliveries[0]
        add(
            f"Delivery: {d0.live:,} of {d0.sockets:,} sockets live (opened in "
            f"{d0.connect_seconds:.0f} s by {d0.procs} client processes)."
        )
        add("")
        add(
            "| rate | s | answered / due | sends/s | never sent | delivered / owed | "
            "delivery p50 | p90 | p99 | max | first p50 | first p99 | 201 p50 | 201 p99 | "
            "after 201 p50 | after 201 p99 | from write p50 | server CPU | server RSS peak |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for d in deliveries:
            add(
                f"| {d.rate:.0f}/s | {d.seconds:.0f} | {d.answered:,} / {d.due:,} | "
                f"{d.send_rate:,.0f} | {d.missed:,} | {d.delivered:,} / {d.expected:,} | "
                f"{fmt(d.all_ms[0])} | {fmt(d.all_ms[1])} | {fmt(d.all_ms[2])} | "
                f"{fmt(d.all_ms[3])} | {fmt(d.first_ms[0])} | {fmt(d.first_ms[1])} | "
                f"{fmt(d.http_ms[0])} | {fmt(d.http_ms[1])} | {fmt(d.after_ms[0])} | "
                f"{fmt(d.after_ms[1])} | {fmt(d.write_ms[0])} | {d.server_cpu_pct:.0f} % | "
                f"{d.rss_peak_kb / 1024:.0f} MB |"
            )
        add("")
        add(
            "(All latencies in ms. Server CPU: % of one core over the phase and until the "
            f"server went quiet after it. Sockets closed by the server during the run: "
            f"{d0.closed_early:,}.)"
        )
        add("")
    for i in idles:
        how = "offering permessage-deflate (as browsers do)" if i.deflate else "without deflate"
        add(
            f"Idle sockets, clients {how}: {i.live:,} of {i.target:,} live, opened and resumed in "
            f"{i.connect_seconds:.0f} s by {i.procs} client processes (RLIMIT_NOFILE "
            f"{i.fd_limit:,}); server VmRSS {i.rss_empty_kb / 1024:.0f} MB with none, "
            f"{i.rss_open_kb / 1024:.0f} MB with them (peak {i.rss_peak_kb / 1024:.0f} MB), "
            f"{i.kb_per_socket:.1f} KB per socket; while they sat idle for "
            f"{i.idle_seconds:.0f} s the server used {i.idle_cpu_pct:.1f} % of a core (the "
            "hub's per-second check of new or due sessions and of the log's head, "
            "protocol pings)." + (f" {i.note}." if i.note else "")
        )
        add("")
    return "\n".join(lines)


def replace_section(doc: str, new: str) -> str:
    """The doc with its realtime section replaced (or appended)."""
    start = doc.find(SECTION)
    if start < 0:
        return doc.rstrip("\n") + "\n\n" + new.rstrip("\n") + "\n"
    end = doc.find("\n## ", start + len(SECTION))
    tail = doc[end + 1 :] if end >= 0 else ""
    return doc[:start] + new.rstrip("\n") + "\n" + ("\n" + tail if tail else "")


def run(
    seeded: Seeded,
    workdir: Path,
    *,
    quick: bool,
    log: Callable[[str], None],
) -> tuple[list[Delivery], list[Idle]]:
    fd = raise_fd_limit()
    log(f"realtime: RLIMIT_NOFILE {fd[0]:,}")
    deliveries: list[Delivery] = []
    server = Server(seeded, workdir / "server-realtime.log")
    server.start()
    log(f"realtime: server settled in {server.wait_settled():.0f} s")
    try:
        deliveries = delivery(
            seeded,
            server,
            sockets=200 if quick else 1000,
            procs=2,
            phases=[(50.0, 3.0), (500.0, 3.0)] if quick else [(50.0, 10.0), (500.0, 10.0)],
            grace=2.0 if quick else 5.0,
            log=log,
        )
    finally:
        server.stop()
    idles: list[Idle] = []
    for deflate in (True, False):
        server = Server(seeded, workdir / f"server-idle-{deflate}.log")
        server.start()
        try:
            idles.append(
                idle(
                    seeded,
                    server,
                    target=2000 if quick else TARGET_IDLE,
                    procs=4,
                    idle_seconds=5.0 if quick else 10.0,
                    deflate=deflate,
                    log=log,
                )
            )
        finally:
            server.stop()
    return deliveries, idles
