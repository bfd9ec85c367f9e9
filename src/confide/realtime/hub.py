"""The hub: this process's open sockets, fed from the event log (docs/realtime.md).

One hub per `serve` process. The broker tells it that the log has grown; it reads the
new events once, builds frames per actor (realtime/frames.py: authorized now, with the
API's own checks) and queues them on each socket of that actor.

No gap, no duplicate. Each socket has a high-water mark `hwm`: every position at or
below it has been considered for that socket. A socket starts by replaying
`position > cursor` from the store, by itself, up to the hub's `head`; it turns live
only when its `hwm` has reached `head`, in the same step of the event loop as the
check. The hub reads the next events and builds their frames in one worker call, for
every socket open when the call began (live or still replaying); back in the loop it
moves `head` forward before anything else, and delivers an event only to live sockets
whose `hwm` is below it. A socket that opened and turned live while the call ran has
no frames in it: if it is owed any of those events, it goes back to replaying from its
`hwm`. So an event is delivered either by the socket's replay or by the hub, exactly
once.

Sockets are closed with:
  4401  the session ended (sign-out, expiry, member disabled): within a second, by the
        event or by the periodic session check (PA5)
  4403  the actor may no longer use messaging (EN6: a client's messaging turned off)
  4008  slow reader: its send queue is full (it resumes from its cursor)
  1009  an incoming frame over 4 KiB;  1008  a frame that breaks the protocol
  1003  a binary frame;  1011  an internal error;  1012  the server is restarting
"""

import asyncio
import contextlib
import heapq
import json
import logging
from collections import deque
from collections.abc import MutableMapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from anyio import to_thread

from confide.domain.actors import Actor
from confide.domain.ids import PracticeId
from confide.realtime.broker import Broker
from confide.realtime.frames import (
    NOT_ALLOWED,
    SESSION_ENDED,
    SLOW_READER,
    Batch,
    Recheck,
    Renderer,
    build_batch,
    encode,
    stay_open_code,
    unread_total_or_zero,
)
from confide.services import sessions
from confide.services.sessions import SessionCheck, SessionPolicy
from confide.store.clock import utcnow
from confide.store.db import Database
from confide.store.repos.events import StoredEvent
from confide.store.uow import UnitOfWork, unit_of_work

log = logging.getLogger("confide.realtime")

MAX_INCOMING_BYTES = 4096
QUEUE_FRAMES = 256
RESUME_TIMEOUT = 10.0
SESSION_CHECK_SECONDS = 1.0
BATCH = 500

TOO_BIG = 1009
PROTOCOL = 1008
UNSUPPORTED = 1003
INTERNAL = 1011
RESTART = 1012
GONE = -1  # the client went away: nothing left to send


class SocketLike(Protocol):
    """What the hub needs of a WebSocket (Starlette's fits)."""

    async def receive(self) -> MutableMapping[str, Any]: ...

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class Conn:
    """One open socket: who, which session, what it has seen, what waits to be sent.

    Most sockets sit idle most of the time, so an idle one holds as little as it can
    (docs/benchmarks.md, idle sockets): frames wait in a deque made for a burst and
    dropped after it, a sender task runs only while there is something to send, and the
    resume deadline is a timer, not a task.
    """

    __slots__ = (
        "actor",
        "catch_up",
        "close_code",
        "closed",
        "deadline",
        "frames",
        "hwm",
        "key",
        "limit",
        "live",
        "resumed",
        "room",
        "sender",
        "session_id",
        "ws",
    )

    def __init__(self, actor: Actor, session_id: str, ws: SocketLike, limit: int) -> None:
        self.actor = actor
        self.key = replace(actor, ip=None)  # frames are built once per key
        self.session_id = session_id
        self.ws = ws
        self.limit = limit
        self.frames: deque[str] | None = None
        self.sender: asyncio.Task[None] | None = None
        self.room: asyncio.Future[None] | None = None  # a replay waiting for room
        self.hwm = 0
        self.live = False
        self.resumed = False
        self.close_code: int | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deadline: asyncio.TimerHandle | None = None
        self.catch_up: asyncio.Task[None] | None = None  # while it runs only

    def offer(self, frame: str) -> bool:
        """Queue a frame; a full queue closes the socket (4008) instead of growing."""
        if self.close_code is not None:
            return False
        if self.frames is not None and len(self.frames) >= self.limit:
            self.close(SLOW_READER)
            return False
        self._append(frame)
        return True

    async def put(self, frame: str) -> None:
        """Queue a frame, waiting for room (replay: a long replay is no slow reader)."""
        while self.frames is not None and len(self.frames) >= self.limit:
            if self.close_code is not None:
                return
            self.room = asyncio.get_running_loop().create_future()
            await self.room
        if self.close_code is None:
            self._append(frame)

    def _append(self, frame: str) -> None:
        if self.frames is None:
            self.frames = deque()
        self.frames.append(frame)
        if self.sender is None:
            self.sender = asyncio.create_task(self._send_all())

    async def _send_all(self) -> None:
        try:
            while self.frames:
                frame = self.frames.popleft()
                self._wake_putter()
                await self.ws.send_text(frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.close(GONE)
        finally:
            self.sender = None
            if not self.frames:
                self.frames = None

    def _wake_putter(self) -> None:
        if self.room is not None and not self.room.done():
            self.room.set_result(None)
        self.room = None

    def caught_up(self, task: asyncio.Task[None]) -> None:
        if self.catch_up is task:  # not a replay started again since (`_replay_again`)
            self.catch_up = None

    def close(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            if not self.closed.done():
                self.closed.set_result(None)
            if self.deadline is not None:
                self.deadline.cancel()
            self._wake_putter()


class Hub:
    def __init__(
        self,
        db: Database,
        broker: Broker,
        session_policy: SessionPolicy,
        render: Renderer,
        *,
        queue_frames: int = QUEUE_FRAMES,
        session_check_seconds: float = SESSION_CHECK_SECONDS,
        batch: int = BATCH,
    ) -> None:
        self.db = db
        self.broker = broker
        self.session_policy = session_policy
        self.render = render
        self.queue_frames = queue_frames
        self.session_check_seconds = session_check_seconds
        self.batch = batch
        self.head = 0
        self._announced = 0  # the newest position a commit announced (it is in the store)
        self._conns: set[Conn] = set()
        self._by_key: dict[Actor, set[Conn]] = {}
        self._by_practice: dict[PracticeId, set[Conn]] = {}
        # The session check (PA5), by time: each open session is checked when its
        # sockets open and again when it is due to pass its idle or absolute limit; the
        # ends that come from people (sign-out, everywhere, a member disabled) arrive as
        # events (`_recheck`). Heap of (due as a UNIX time, session id); `_due_at` says
        # which entry is current (others are skipped when they come up).
        self._by_session: dict[str, set[Conn]] = {}
        self._fresh: set[str] = set()
        self._due: list[tuple[float, str]] = []
        self._due_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        # While a dispatch builds frames: the sockets that turned live meanwhile.
        self._went_live: list[Conn] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.head = await to_thread.run_sync(self._db_head)
        self._unsubscribe = self.broker.subscribe(self._on_announce)
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="confide-hub-dispatch"),
            asyncio.create_task(self._check_loop(), name="confide-hub-sessions"),
        ]

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for conn in list(self._conns):
            conn.close(RESTART)

    @property
    def open_sockets(self) -> int:
        return len(self._conns)

    def _on_announce(self, position: int | None) -> None:
        if position is not None:
            self._announced = max(self._announced, position)
        if position is None or position > self.head:
            self._wake.set()

    # -- one socket -----------------------------------------------------------------------

    async def serve(
        self, ws: SocketLike, actor: Actor, session_id: str, *, checked: bool = False
    ) -> None:
        """Run an accepted socket until it closes. The actor comes from a live session
        (web/ws.py checked the cookie and the Origin and, `checked`, that the actor may
        keep a socket open: `frames.stay_open_code`, in the session check's transaction)."""
        if not checked:
            code = await to_thread.run_sync(self._stay_open_code, actor)
            if code is not None:
                await ws.close(code)
                return
        conn = Conn(actor, session_id, ws, self.queue_frames)
        self._add(conn)
        conn.deadline = asyncio.get_running_loop().call_later(
            RESUME_TIMEOUT, self._resume_overdue, conn
        )
        receiver = asyncio.create_task(self._receive_loop(conn, ws))
        try:
            await conn.closed
        finally:
            self._remove(conn)
            if conn.close_code is None:
                conn.close(RESTART)  # serve() itself was cancelled: the server stops
            pending = [receiver, *(t for t in (conn.catch_up, conn.sender) if t is not None)]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if conn.close_code != GONE:
                with contextlib.suppress(Exception):
                    await ws.close(conn.close_code or RESTART)

    def _add(self, conn: Conn) -> None:
        self._conns.add(conn)
        self._by_key.setdefault(conn.key, set()).add(conn)
        same_session = self._by_session.setdefault(conn.session_id, set())
        if not same_session:
            self._fresh.add(conn.session_id)
        same_session.add(conn)
        self._by_practice.setdefault(conn.key.practice_id, set()).add(conn)

    def _remove(self, conn: Conn) -> None:
        self._conns.discard(conn)
        same_key = self._by_key.get(conn.key, set())
        same_key.discard(conn)
        if not same_key:
            self._by_key.pop(conn.key, None)
        same_session = self._by_session.get(conn.session_id, set())
        same_session.discard(conn)
        if not same_session:
            self._by_session.pop(conn.session_id, None)
            self._fresh.discard(conn.session_id)
            self._due_at.pop(conn.session_id, None)
        same_practice = self._by_practice.get(conn.key.practice_id, set())
        same_practice.discard(conn)
        if not same_practice:
            self._by_practice.pop(conn.key.practice_id, None)

    async def _receive_loop(self, conn: Conn, ws: SocketLike) -> None:
        try:
            while conn.close_code is None:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    conn.close(GONE)
                    return
                text = message.get("text")
                if text is None:
                    data = message.get("bytes") or b""
                    conn.close(TOO_BIG if len(data) > MAX_INCOMING_BYTES else UNSUPPORTED)
                    return
                if len(text) > MAX_INCOMING_BYTES or len(text.encode()) > MAX_INCOMING_BYTES:
                    conn.close(TOO_BIG)
                    return
                self._handle(conn, text)
        except asyncio.CancelledError:
            raise
        except Exception:
            conn.close(GONE)

    def _handle(self, conn: Conn, text: str) -> None:
        """Client frames: `{"type":"resume","cursor":N|0|null}` once, first; then
        `{"type":"ping"}` at will. Anything else closes with 1008."""
        try:
            frame = json.loads(text)
        except ValueError:
            conn.close(PROTOCOL)
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "resume" and not conn.resumed:
            cursor = frame.get("cursor")
            if cursor is not None and (
                not isinstance(cursor, int) or isinstance(cursor, bool) or not 0 <= cursor < 2**62
            ):
                conn.close(PROTOCOL)
                return
            conn.resumed = True
            if conn.deadline is not None:  # an idle socket keeps no spent timer
                conn.deadline.cancel()
                conn.deadline = None
            conn.catch_up = asyncio.create_task(self._catch_up(conn, cursor))
            conn.catch_up.add_done_callback(conn.caught_up)  # a done task holds its frames
        elif kind == "ping" and conn.resumed:
            conn.offer(encode({"type": "pong"}))
        else:
            conn.close(PROTOCOL)

    @staticmethod
    def _resume_overdue(conn: Conn) -> None:
        if not conn.resumed:
            conn.close(PROTOCOL)

    async def _catch_up(self, conn: Conn, cursor: int | None, *, fresh: bool = True) -> None:
        """Replay `position > cursor` from the store, then turn live (see the module
        docstring for why this leaves no gap and no duplicate). Ends with a `ready`
        frame carrying the position reached and the unread total (MS7). Not `fresh`:
        a live socket sent back to replay from its own `hwm` (`_dispatch_once`)."""
        try:
            first: tuple[list[str], int, int | None] | None = None
            if fresh:  # where to start, and the first stretch of the replay: one call
                start, resync, first = await to_thread.run_sync(
                    self._start_and_replay, conn.key, cursor, self.head
                )
                if resync:  # a cursor from the future or from before pruned events
                    conn.offer(encode({"type": "resync", "position": start}))
            else:
                start = conn.hwm
            conn.hwm = start
            unread: int | None = None
            if first is not None:
                frames, scanned, unread = first
                for frame in frames:
                    await conn.put(frame)
                conn.hwm = scanned
            while conn.close_code is None:
                if unread is not None and conn.hwm >= self.head:
                    # Replay waits for the reader (a long replay is no slow reader), so
                    # the `ready` frame may have to wait for room; the check above is
                    # repeated after that wait, in the step that turns the socket live.
                    await conn.put(
                        encode({"type": "ready", "position": conn.hwm, "unread": unread})
                    )
                    if conn.hwm >= self.head:
                        conn.live = True
                        if self._went_live is not None:  # a dispatch is building frames
                            self._went_live.append(conn)
                        return
                upto = max(self.head, conn.hwm)
                frames, scanned, unread = await to_thread.run_sync(
                    self._replay, conn.key, conn.hwm, upto
                )
                for frame in frames:
                    await conn.put(frame)
                conn.hwm = scanned
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("socket replay failed: %s", type(exc).__name__)
            conn.close(INTERNAL)

    # -- the hub's own loops ------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._dispatch_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("hub dispatch failed: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _dispatch_once(self) -> bool:
        """Deliver the next events after `head`; True if there may be more.

        The events are read and their frames built in ONE call to a worker thread (one
        read transaction), for every actor with a socket open now, live or still
        replaying. A socket that turns live while that call runs, without frames of its
        own in it (it opened meanwhile), is sent back to replay from its `hwm`: so no
        live socket ever misses an event of this batch (see the module docstring).

        With no socket open here, the log is not read: `head` moves to the newest
        announced position (committed, so in the store), and a socket that opens later
        replays up to it from the store, as any new socket does."""
        if not self._conns and self._announced > self.head:
            self.head = self._announced
            return False
        audience: dict[PracticeId, set[Actor]] = {}
        for key in self._by_key:
            audience.setdefault(key.practice_id, set()).add(key)
        self._went_live = []
        try:
            events, batch = await to_thread.run_sync(self._read_and_build, self.head, audience)
        except Exception as exc:
            # Those sockets cannot be served these events now: close them, and they
            # resume from their cursors (nothing lost). The head stays: nothing was read.
            log.error("hub frames failed: %s", type(exc).__name__)
            for conn in list(self._conns):
                if conn.live:
                    conn.close(INTERNAL)
            return False
        finally:
            went_live, self._went_live = self._went_live, None
        if not events:
            return False
        self.head = events[-1].position  # before any await below: see the docstring
        for conn in went_live or ():
            if (
                conn.live
                and conn.hwm < self.head
                and conn.key not in audience.get(conn.key.practice_id, ())
            ):
                self._replay_again(conn)
        for ev in events:
            recheck = batch.rechecks.get(ev.position)
            if recheck is not None:
                await self._recheck(recheck)
            delivered = False
            for key, frames in batch.frames.get(ev.position, {}).items():
                for conn in list(self._by_key.get(key, ())):
                    if conn.live and conn.hwm < ev.position:
                        conn.hwm = ev.position
                        delivered = True
                        for frame in frames:
                            conn.offer(frame)
            if delivered:
                # Let the senders drain between events: a burst is not a slow reader;
                # a reader whose queue still fills up is (4008).
                await asyncio.sleep(0)
        return len(events) >= self.batch

    def _replay_again(self, conn: Conn) -> None:
        conn.live = False
        conn.catch_up = asyncio.create_task(self._catch_up(conn, conn.hwm, fresh=False))
        conn.catch_up.add_done_callback(conn.caught_up)

    async def _recheck(self, recheck: Recheck) -> None:
        """Revocation: a session ended, a member was disabled, a client's messaging was
        turned off. The affected sockets check their session and standing now. The
        practice's session rules changed: every socket of it reads its session again."""
        if recheck.sessions:
            self._fresh |= {c.session_id for c in self._by_practice.get(recheck.practice_id, ())}
            await self._check_due()
            return
        conns = [
            c
            for c in self._by_practice.get(recheck.practice_id, ())
            if (c.key.is_client_side if recheck.parties is None else c.key.party in recheck.parties)
        ]
        if not conns:
            return
        codes = await to_thread.run_sync(self._check_conns, [(c.session_id, c.key) for c in conns])
        for conn, code in zip(conns, codes, strict=True):
            if code is not None:
                conn.close(code)

    async def _check_loop(self) -> None:
        """Every second: end the sockets of sessions that expired (PA5: idle and absolute
        limits apply to open sockets too), and look at the log's head in case an
        announcement was missed (Redis away, another process's relay).

        Only the sessions that are new or due are read (one query per 500 of them),
        not every socket's each tick: a session's limits are known from its row, so it
        is read again when it would pass one (sooner if its idle timer did not move,
        later if a request moved it). Sessions ended by someone come as events."""
        while True:
            await asyncio.sleep(self.session_check_seconds)
            try:
                await self._check_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("hub session check failed: %s", type(exc).__name__)

    def _take_due(self, now: float) -> set[str]:
        """The sessions to read this tick: new ones and those whose due time passed."""
        sids, self._fresh = self._fresh, set()
        while self._due and self._due[0][0] <= now:
            at, sid = heapq.heappop(self._due)
            if self._due_at.get(sid) == at:
                del self._due_at[sid]
                sids.add(sid)
        return sids

    def _schedule(self, sid: str, at: float) -> None:
        if sid in self._by_session:
            self._due_at[sid] = at
            heapq.heappush(self._due, (at, sid))

    async def _check_due(self) -> None:
        sids = self._take_due(utcnow().timestamp())
        try:
            dead, due, head = await to_thread.run_sync(self._session_dues, sids)
        except BaseException:
            self._fresh |= {sid for sid in sids if sid in self._by_session}  # next tick
            raise
        for sid in dead:
            for conn in list(self._by_session.get(sid, ())):
                conn.close(SESSION_ENDED)
        for sid, at in due.items():
            self._schedule(sid, at)
        if len(self._due) > 2 * len(self._due_at) + 64:  # skipped entries pile up
            self._due = [(at, sid) for sid, at in self._due_at.items()]
            heapq.heapify(self._due)
        if head > self.head:
            self._wake.set()

    # -- database work, in worker threads ------------------------------------------------

    def _db_head(self) -> int:
        with unit_of_work(self.db, write=False) as uow:
            return uow.event_log.head()

    def _read_and_build(
        self, after: int, audience: dict[PracticeId, set[Actor]]
    ) -> tuple[list[StoredEvent], Batch]:
        """The next events after `after`, and their frames for `audience`, in one read
        transaction."""
        with unit_of_work(self.db, write=False) as uow:
            events = uow.event_log.read_after(after, limit=self.batch)
            wanted = [e for e in events if e.practice_id in audience]
            batch = build_batch(uow, wanted, audience, self.render) if wanted else Batch()
        return events, batch

    def _stay_open_code(self, actor: Actor) -> int | None:
        with unit_of_work(self.db, write=False) as uow:
            return stay_open_code(uow, actor)

    @staticmethod
    def _start_position(uow: UnitOfWork, cursor: int | None) -> tuple[int, bool]:
        head = uow.event_log.head()
        if not cursor:
            return head, False
        if cursor > head:
            return head, True
        oldest = uow.event_log.oldest()
        if oldest is not None and cursor < oldest - 1:
            return head, True
        return cursor, False

    def _start_and_replay(
        self, key: Actor, cursor: int | None, hub_head: int
    ) -> tuple[int, bool, tuple[list[str], int, int | None]]:
        """Where a new socket starts (and whether it must resync), and the first stretch
        of its replay, up to the hub's head when the call was made: one transaction."""
        with unit_of_work(self.db, write=False) as uow:
            start, resync = self._start_position(uow, cursor)
            return start, resync, self._replay_in(uow, key, start, max(hub_head, start))

    def _replay(self, key: Actor, after: int, upto: int) -> tuple[list[str], int, int | None]:
        with unit_of_work(self.db, write=False) as uow:
            return self._replay_in(uow, key, after, upto)

    def _replay_in(
        self, uow: UnitOfWork, key: Actor, after: int, upto: int
    ) -> tuple[list[str], int, int | None]:
        """Frames for (after, upto] of the actor's practice; the unread total once the
        end is reached."""
        events = uow.events.list_events(key.practice_id, after=after, upto=upto, limit=self.batch)
        more = len(events) >= self.batch
        scanned = events[-1].position if more else upto
        batch = build_batch(uow, events, {key.practice_id: {key}}, self.render, unread=False)
        unread = None if more else unread_total_or_zero(uow, key)
        return batch.for_actor(key), max(scanned, after), unread

    def _check_sessions(self, session_ids: set[str]) -> dict[str, SessionCheck]:
        """All these sessions at once: one query per 500 (not one per socket)."""
        with unit_of_work(self.db, write=False) as uow:
            checks = sessions.check_sessions(uow, session_ids, self.session_policy)
        for sid, check in checks.items():
            if check.expired:  # end it for real, as a request would (audited, evented)
                with unit_of_work(self.db, write=True) as uow:
                    sessions.refresh_session(uow, sid, check)
        return checks

    def _session_dues(self, session_ids: set[str]) -> tuple[set[str], dict[str, float], int]:
        """Of these sessions: the ended ones, and when each live one is due again."""
        checks = self._check_sessions(session_ids) if session_ids else {}
        dead: set[str] = set()
        due: dict[str, float] = {}
        for sid, c in checks.items():
            if c.actor is None or c.expired or c.must_enroll or c.due is None:
                dead.add(sid)
            else:
                due[sid] = c.due.timestamp()
        return dead, due, self._db_head()

    def _check_conns(self, items: Sequence[tuple[str, Actor]]) -> list[int | None]:
        checks = self._check_sessions({sid for sid, _ in items})
        codes: list[int | None] = []
        with unit_of_work(self.db, write=False) as uow:
            for sid, key in items:
                check = checks[sid]
                if check.actor is None or check.expired or check.must_enroll:
                    codes.append(SESSION_ENDED)
                else:
                    codes.append(stay_open_code(uow, key))
        return codes


__all__ = ["NOT_ALLOWED", "SESSION_ENDED", "SLOW_READER", "Conn", "Hub", "SocketLike"]
