"""Realtime delivery over a real WebSocket (NT5, MS6, MS7, AW1, EN6, PA5, PM2, PM7).

A real uvicorn server runs the app in a thread (lifespan included: relay, broker, hub);
the tests hold sockets with the `websockets` client and change state through the
services, as the app would. Waits are bounded (`WAIT`) but never timed, except the
2-second revocation bound of PA5.
"""

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from confide.auth.tokens import token_hash
from confide.domain.actors import Actor, PartyKind, Via
from confide.domain.ids import PracticeId
from confide.jobs.outbox import OutboxRelay, relay_once
from confide.realtime.broker import MemoryBroker
from confide.realtime.frames import EVENT_KINDS
from confide.realtime.hub import Hub
from confide.runtime import Runtime
from confide.services import clients, messaging, practice, sessions, team
from confide.store import migrate
from confide.store.crypto import KeyRing
from confide.store.db import Database, make_engine
from confide.store.tables import Base
from confide.store.uow import relay_at_commit, unit_of_work
from confide.web.app import create_app
from confide.web.ws import ApiRenderer
from tests.conftest import serving
from tests.personas import PASSWORD, World, anonymous, start

WAIT = 10.0  # a bound for "it arrives", never an assertion about speed
COOKIE = "__Host-confide_session"


@pytest.fixture(scope="module")
def server(runtime: Runtime) -> Iterator[str]:
    with serving(create_app(runtime)) as address:  # as `confide serve` runs it
        yield address


def session_of(world: World, name: str) -> str:
    actor = world.actor(name)
    via = Via.PASSWORD if actor.party.kind is PartyKind.MEMBER else Via.MAGIC_LINK
    with unit_of_work(world.runtime.db) as uow:
        return sessions.start_session(uow, Actor(actor.practice_id, actor.party, via))


class Sock:
    """A test's view of one socket: JSON frames in, close codes out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any] | str) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def frame(self) -> dict[str, Any]:
        f = json.loads(self.ws.recv(timeout=WAIT))
        self.seen.append(f)
        return f

    def until(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Frames up to and including the first that matches."""
        got = []
        while True:
            f = self.frame()
            got.append(f)
            if pred(f):
                return got

    def next_of(self, kind: str) -> dict[str, Any]:
        return self.until(lambda f: f["type"] == kind)[-1]

    def messages(self, n: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < n:
            f = self.frame()
            if f["type"] == "message.created":
                got.append(f)
        return got

    def close_code(self) -> int:
        """Read until the server closes; the close code."""
        try:
            while True:
                self.frame()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code

    @property
    def cursor(self) -> int:
        return max(f["position"] for f in self.seen if "position" in f)

    def close(self) -> None:
        self.ws.close()


def open_socket(
    server: str, session_id: str | None, *, origin: str | None = "same", resume: bool = True
) -> ClientConnection:
    headers = {}
    if session_id is not None:
        headers["Cookie"] = f"{COOKIE}={session_id}"
    if origin is not None:
        headers["Origin"] = f"http://{server}" if origin == "same" else origin
    return track(
        connect(
            f"ws://{server}/api/v1/ws",
            additional_headers=headers,
            proxy=None,
            open_timeout=WAIT,
            legacy=True,
        )
    )


_opened: list[ClientConnection] = []


def track(ws: ClientConnection) -> ClientConnection:
    _opened.append(ws)
    return ws


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def live(server: str, session_id: str, cursor: int | None = 0) -> Sock:
    """A socket that resumed from `cursor` and reached `ready` (replay frames, if any,
    are in `seen`)."""
    sock = Sock(open_socket(server, session_id))
    sock.send({"type": "resume", "cursor": cursor})
    sock.next_of("ready")
    return sock


def relayed(world: World, timeout: float = 10.0) -> None:
    """Wait until the server's outbox relay has moved every committed event into the
    event log (it runs on its own; the tests only watch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with unit_of_work(world.runtime.db, write=False) as uow:
            if not uow.event_log.has_pending_outbox(EVENT_KINDS):
                return
        time.sleep(0.02)
    raise AssertionError("the outbox relay did not publish in time")


def send(world: World, by: str, conversation_id: int, text: str) -> messaging.Sent:
    with unit_of_work(world.runtime.db) as uow:
        return messaging.send_message(
            uow,
            world.actor(by),
            messaging.SendMessage(conversation_id, text, f"rt-{time.monotonic_ns()}"),
        )


def is_message(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == "message.created" and f["message"]["text"] == text


# -- delivery ----------------------------------------------------------------------------


def test_nt5_a_new_message_reaches_every_open_socket_of_the_recipient(world: World, server: str):
    laptop, phone = live(server, session_of(world, "carl")), live(server, session_of(world, "carl"))
    sent = start(world, "alex", members=("carl",), text="Can we move Thursday?")
    for sock in (laptop, phone):
        created = sock.next_of("message.created")
        assert created["conversation_id"] == sent.conversation.id
        message = created["message"]
        assert message["id"] == sent.message.id and message["seq"] == 1
        assert message["text"] == "Can we move Thursday?"
        assert message["sender"]["kind"] == "client" and message["sender"]["id"] == world.id("alex")
        assert message["created_at"] and message["removed"] is False
        unread = sock.next_of("unread")  # MS7: the red bubble, at once
        assert unread["unread"] == 1 and unread["position"] == created["position"]


def test_nt5_frames_show_the_message_as_the_api_does(world: World, server: str):
    sock = live(server, session_of(world, "carl"))
    sent = start(world, "alex", members=("carl",), text="Same shape :thumbsup:")
    frame = sock.next_of("message.created")["message"]
    page = world.api("carl").get(f"/api/v1/conversations/{sent.conversation.id}").json()
    assert frame == page["messages"][-1]


def test_nt5_the_senders_other_devices_get_their_own_message(world: World, server: str):
    phone = live(server, session_of(world, "carl"))
    r = world.api("carl").post(  # sent from "the laptop" (an API token)
        "/api/v1/conversations",
        json={"client_id": world.id("alex"), "text": "Sent from my laptop", "idempotency_key": "x"},
    )
    assert r.status_code == 201
    frame = phone.next_of("message.created")
    assert frame["message"]["text"] == "Sent from my laptop"
    assert frame["message"]["sender"]["id"] == world.id("carl")


def test_nt5_a_client_sees_a_reply_and_the_read_position_moves_on_every_device(
    world: World, server: str
):
    alex = live(server, session_of(world, "alex"))
    alex_phone = live(server, session_of(world, "alex"))
    sent = start(world, "carl", client="alex", text="See you Thursday")
    assert alex.next_of("message.created")["message"]["text"] == "See you Thursday"
    assert alex.next_of("unread")["unread"] == 1
    r = world.api("alex").post(
        f"/api/v1/conversations/{sent.conversation.id}/read", json={"seq": 1}
    )
    assert r.status_code == 200
    for sock in (alex, alex_phone):
        read = sock.next_of("conversation.read")
        assert read == {
            "type": "conversation.read",
            "position": read["position"],
            "conversation_id": sent.conversation.id,
            "seq": 1,
        }
        assert sock.next_of("unread")["unread"] == 0


def test_aw1_away_changes_reach_the_team_and_the_clients_in_conversation(world: World, server: str):
    start(world, "alex", members=("carl",), text="Hello")
    olivia, alex, jordan = (
        live(server, session_of(world, n)) for n in ("olivia", "alex", "jordan")
    )
    with unit_of_work(world.runtime.db) as uow:
        team.set_away(uow, world.actor("carl"), on=True, text="Back Monday.")
    for sock in (olivia, alex):
        away = sock.next_of("away.changed")
        assert away["member_id"] == world.id("carl")
        assert away["away"] is True and away["away_text"] == "Back Monday."
    # Jordan has no conversation with Carl: the next frame Jordan gets is the marker.
    start(world, "betty", client="jordan", text="marker")
    assert jordan.until(lambda f: f["type"] == "message.created")[0]["type"] == "message.created"


# -- cursor resume -----------------------------------------------------------------------


def test_nt5_resume_after_a_dropped_connection_gets_exactly_what_was_missed(
    world: World, server: str
):
    sid = session_of(world, "carl")
    sock, desktop = live(server, sid), live(server, session_of(world, "carl"))
    sent = start(world, "alex", members=("carl",), text="first")
    conv = sent.conversation.id
    sock.until(is_message("first"))
    cursor = sock.cursor
    sock.close()
    for i in range(5):
        send(world, "alex", conv, f"while away {i}")
    desktop.until(is_message("while away 4"))  # so all five are in the log: replay serves them

    again = Sock(open_socket(server, sid))
    again.send({"type": "resume", "cursor": cursor})
    replayed = again.until(lambda f: f["type"] == "ready")
    msgs = [f for f in replayed if f["type"] == "message.created"]
    assert [m["message"]["text"] for m in msgs] == [f"while away {i}" for i in range(5)]
    assert [m["message"]["seq"] for m in msgs] == [2, 3, 4, 5, 6]
    positions = [m["position"] for m in msgs]
    assert positions == sorted(set(positions)) and positions[0] > cursor
    assert replayed[-1]["unread"] == 6  # ready: the bubble as it is now
    assert replayed[-1]["position"] >= positions[-1]

    send(world, "alex", conv, "live again")
    after = again.until(is_message("live again"))
    assert [f["message"]["seq"] for f in after if f["type"] == "message.created"] == [7]


def test_nt5_resume_while_messages_keep_coming_has_no_gap_and_no_duplicate(
    world: World, server: str
):
    sid = session_of(world, "carl")
    sock = live(server, sid)
    sent = start(world, "alex", members=("carl",), text="start")
    sock.until(is_message("start"))
    cursor = sock.cursor
    sock.close()
    total = 40
    sender = threading.Thread(
        target=lambda: [send(world, "alex", sent.conversation.id, f"m{i}") for i in range(total)]
    )
    sender.start()
    try:
        again = Sock(open_socket(server, sid))  # reconnects while the sends go on
        again.send({"type": "resume", "cursor": cursor})
        msgs = again.until(is_message(f"m{total - 1}"))
    finally:
        sender.join()
    seqs = [f["message"]["seq"] for f in msgs if f["type"] == "message.created"]
    assert seqs == list(range(2, total + 2))
    positions = [f["position"] for f in msgs if f["type"] == "message.created"]
    assert positions == sorted(set(positions))


def test_nt5_live_only_resume_and_future_cursor_get_a_fresh_start(world: World, server: str):
    sid = session_of(world, "carl")
    start(world, "alex", members=("carl",), text="before")
    # "Live from now" means from the log's current head: let the relay log "before"
    # first, or it may be relayed after the socket joined and arrive live.
    while relay_once(world.runtime.db) is not None:
        pass
    fresh = Sock(open_socket(server, sid))
    fresh.send({"type": "resume", "cursor": None})
    first = fresh.frame()
    assert first["type"] == "ready" and first["unread"] == 1  # no replay, the bubble only
    future = Sock(open_socket(server, sid))
    future.send({"type": "resume", "cursor": 2**60})
    assert future.frame()["type"] == "resync"  # reload from the API, then live
    assert future.frame()["type"] == "ready"


# -- authorization per event -------------------------------------------------------------


def test_pm7_no_frames_about_another_practice(world: World, server: str):
    carl = live(server, session_of(world, "carl"))
    start(world, "zoe", members=("bea",), text="Birch Road only")
    start(world, "alex", members=("carl",), text="marker")
    got = carl.until(lambda f: f["type"] == "message.created")
    assert got[-1]["message"]["text"] == "marker"
    assert "Birch Road" not in json.dumps(carl.seen)


def test_pm2_a_member_who_is_not_in_the_conversation_gets_nothing_of_it(world: World, server: str):
    # Betty has no access to Alex; Sam supervises Carl (access) but is not a participant.
    betty, sam = live(server, session_of(world, "betty")), live(server, session_of(world, "sam"))
    start(world, "alex", members=("carl",), text="for Carl only")
    start(world, "olivia", members=("betty", "sam"), text="marker")
    for sock in (betty, sam):
        got = sock.until(lambda f: f["type"] == "message.created")
        assert got[-1]["message"]["text"] == "marker"
        assert "for Carl only" not in json.dumps(sock.seen)


def test_pm2_a_grant_removed_mid_stream_stops_the_frames_at_once(world: World, server: str):
    sent = start(world, "gus", client="nora", text="hello Nora")
    gus = live(server, session_of(world, "gus"))
    send(world, "nora", sent.conversation.id, "reply one")
    assert gus.until(is_message("reply one"))
    with unit_of_work(world.runtime.db) as uow:
        clients.set_client_access_grant(
            uow, world.actor("olivia"), world.id("nora"), world.id("gus"), on=False
        )
    send(world, "nora", sent.conversation.id, "reply two: gus may not read this")
    start(world, "olivia", members=("gus",), text="marker")
    got = gus.until(is_message("marker"))
    assert not any("reply two" in json.dumps(f) for f in got)
    # The replay path asks the same question: a resume from before shows nothing either.
    again = live(server, session_of(world, "gus"), cursor=1)
    assert "Nora" not in json.dumps(again.seen) and "reply" not in json.dumps(again.seen)


def test_ms6_removed_messages_travel_without_their_text(world: World, server: str):
    alex = live(server, session_of(world, "alex"))
    sent = start(world, "carl", client="alex", text="Sent to the wrong client")
    created = alex.next_of("message.created")
    with unit_of_work(world.runtime.db) as uow:
        messaging.remove_message(uow, world.actor("carl"), sent.conversation.id, sent.message.id)
    removed = alex.next_of("message.removed")
    assert removed == {
        "type": "message.removed",
        "position": removed["position"],
        "conversation_id": sent.conversation.id,
        "message_id": sent.message.id,
        "seq": 1,
    }
    assert alex.next_of("unread")["unread"] == 0
    # Replayed later, the creation carries no text either.
    replay = live(server, session_of(world, "alex"), cursor=created["position"] - 1)
    assert "Sent to the wrong client" not in json.dumps(replay.seen)
    again = next(f for f in replay.seen if f["type"] == "message.created")
    assert again["message"]["text"] is None and again["message"]["removed"] is True


# -- revocation --------------------------------------------------------------------------


def test_pa5_signing_out_closes_that_sessions_sockets_within_2_seconds(world: World, server: str):
    http = anonymous(world.runtime)
    r = http.post("/api/v1/auth/login", json={"email": world.emails["carl"], "password": PASSWORD})
    assert r.status_code == 204
    sid = http.cookies.get(COOKIE)
    assert sid
    sock, other_session = live(server, sid), live(server, session_of(world, "carl"))
    t0 = time.monotonic()
    assert http.post("/api/v1/auth/logout").status_code == 204
    assert sock.close_code() == 4401
    assert time.monotonic() - t0 < 2.0
    # Carl's other session (another device) stays open and keeps receiving.
    start(world, "alex", members=("carl",), text="still here")
    assert other_session.until(is_message("still here"))
    # And the ended session cannot open a new socket.
    assert Sock(open_socket(server, sid)).close_code() == 4401


def test_pa5_an_idle_session_closes_its_sockets(world: World, server: str):
    sock = live(server, session_of(world, "carl"))
    idle = world.runtime.session_policy.idle + timedelta(minutes=1)
    with time_machine.travel(datetime.now(UTC) + idle, tick=True):
        assert sock.close_code() == 4401


def test_pa5_a_disabled_member_loses_their_sockets_within_2_seconds(world: World, server: str):
    sock = live(server, session_of(world, "carl"))
    t0 = time.monotonic()
    with unit_of_work(world.runtime.db) as uow:
        team.update_member(uow, world.actor("olivia"), world.id("carl"), active=False)
    assert sock.close_code() == 4401
    assert time.monotonic() - t0 < 2.0


def test_en6_turning_a_clients_messaging_off_ends_their_frames_and_sockets(
    world: World, server: str
):
    sent = start(world, "betty", client="jordan", text="hi Jordan")
    # The sockets start live once the server's relay has published "hi Jordan": opened
    # earlier, a socket rightly gets that message live, which is not what is tested here.
    relayed(world)
    jordan, pat = live(server, session_of(world, "jordan")), live(server, session_of(world, "pat"))
    betty = live(server, session_of(world, "betty"))
    with unit_of_work(world.runtime.db) as uow:
        clients.set_client_messaging(
            uow, world.actor("olivia"), world.id("jordan"), messaging_enabled=False
        )
    assert jordan.close_code() == 4403
    assert not any(f["type"] == "message.created" for f in jordan.seen)
    assert Sock(open_socket(server, session_of(world, "jordan"))).close_code() == 4403
    pat.send({"type": "ping"})  # a contact keeps their own box (EN3): still open
    assert pat.next_of("pong")
    # The team keeps the history (EN6): Betty still reads the conversation.
    page = world.api("betty").get(f"/api/v1/conversations/{sent.conversation.id}").json()
    assert page["messages"][0]["text"] == "hi Jordan"
    start(world, "olivia", members=("betty",), text="marker")
    assert betty.until(is_message("marker"))


# -- the handshake and the protocol -------------------------------------------------------


def test_nt5_a_handshake_from_another_origin_is_refused(world: World, server: str):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(server, session_of(world, "carl"), origin="https://evil.example")
    assert refused.value.response.status_code == 403


def test_nt5_no_session_no_socket(world: World, server: str):
    assert Sock(open_socket(server, None)).close_code() == 4401
    assert Sock(open_socket(server, "not-a-session")).close_code() == 4401
    # An API token is for HTTP only, never in a URL.
    token = world.api("carl").headers["Authorization"].removeprefix("Bearer ")
    ws = track(
        connect(
            f"ws://{server}/api/v1/ws?token={token}", proxy=None, open_timeout=WAIT, legacy=True
        )
    )
    assert Sock(ws).close_code() == 4401


def test_nt5_an_oversize_frame_closes_the_socket(world: World, server: str):
    sock = live(server, session_of(world, "carl"))
    sock.send({"type": "ping", "pad": "x" * 5000})
    assert sock.close_code() == 1009


def test_nt5_frames_outside_the_protocol_close_the_socket(world: World, server: str):
    for bad in ("not json", {"type": "subscribe", "conversation_id": 1}, {"type": "resume"}):
        sock = live(server, session_of(world, "carl"))
        sock.send(bad)
        assert sock.close_code() == 1008
    sock = live(server, session_of(world, "carl"))
    sock.send({"type": "ping"})
    assert sock.frame() == {"type": "pong"}


def test_nt5_a_reader_that_does_not_keep_up_is_closed_and_resumes_by_cursor(
    world: World, server: str
):
    sid = session_of(world, "carl")
    watcher = live(server, sid)
    sent = start(world, "alex", members=("carl",), text="before")
    watcher.until(is_message("before"))  # in the log: before the stuck reader's cursor
    stuck = StuckReader()

    async def scenario() -> None:
        broker = MemoryBroker()
        hub = Hub(
            world.runtime.db, broker, world.runtime.session_policy, ApiRenderer(), queue_frames=4
        )
        relay = OutboxRelay(world.runtime.db, broker)
        await hub.start()
        await relay.start()
        try:
            actor = world.actor("carl")
            serving = asyncio.create_task(
                hub.serve(stuck, Actor(actor.practice_id, actor.party, Via.PASSWORD), sid)
            )
            await asyncio.wait_for(stuck.got_ready.wait(), WAIT)
            for i in range(5):
                await asyncio.to_thread(send, world, "alex", sent.conversation.id, f"flood {i}")
            await asyncio.wait_for(serving, WAIT)
        finally:
            await relay.stop()
            await hub.stop()

    asyncio.run(scenario())
    assert stuck.closed_with == 4008
    again = live(server, sid, cursor=stuck.ready_position)
    if not any(is_message("flood 4")(f) for f in again.seen):
        again.until(is_message("flood 4"))  # not yet in the log at `ready`: arrives live
    texts = [f["message"]["text"] for f in again.seen if f["type"] == "message.created"]
    assert texts == [f"flood {i}" for i in range(5)]


def test_nt5_a_socket_that_turns_live_while_frames_are_built_still_gets_every_event(
    world: World,
):
    """The hub reads a batch and builds its frames in one worker call, for the sockets
    open when it started. A socket that opens and turns live during that call, owed an
    event of the batch (committed after its start position), is sent back to replay:
    it gets the event once, then the live ones."""
    sid = session_of(world, "carl")
    conv = start(world, "alex", members=("carl",), text="opening").conversation.id
    late = Recorder()

    async def scenario() -> list[str]:
        broker = MemoryBroker()
        hub = Hub(world.runtime.db, broker, world.runtime.session_policy, ApiRenderer())
        relay = OutboxRelay(world.runtime.db, broker)
        await hub.start()
        await relay.start()
        building, release = threading.Event(), threading.Event()
        real = hub._read_and_build

        def held(after: int, audience: Any) -> Any:
            if not release.is_set():
                building.set()
                release.wait(WAIT)  # the audience was taken; the log not read yet
            return real(after, audience)

        hub._read_and_build = held  # type: ignore[method-assign]
        # Another socket is open (a hub with none does not read the log at all).
        sender, watcher = world.actor("alex"), Recorder()
        other = asyncio.create_task(
            hub.serve(
                watcher,
                Actor(sender.practice_id, sender.party, Via.PASSWORD),
                session_of(world, "alex"),
            )
        )
        try:
            await asyncio.wait_for(watcher.ready.wait(), WAIT)
            await asyncio.to_thread(send, world, "alex", conv, "one")
            assert await asyncio.to_thread(building.wait, WAIT)
            actor = world.actor("carl")
            serving = asyncio.create_task(
                hub.serve(late, Actor(actor.practice_id, actor.party, Via.PASSWORD), sid)
            )
            await asyncio.wait_for(late.ready.wait(), WAIT)  # live, at a head after "one"
            await asyncio.to_thread(send, world, "alex", conv, "two")  # owed to it
            release.set()
            await asyncio.wait_for(late.until("two"), WAIT)
            await asyncio.to_thread(send, world, "alex", conv, "three")
            await asyncio.wait_for(late.until("three"), WAIT)
            for task in (serving, other):
                task.cancel()
            await asyncio.gather(serving, other, return_exceptions=True)
        finally:
            release.set()
            await relay.stop()
            await hub.stop()
        return late.texts

    assert asyncio.run(scenario()) == ["two", "three"]


def test_nt5_with_no_socket_open_the_hub_skips_the_log_and_a_later_socket_misses_nothing(
    world: World,
):
    """A process with no socket open does not read the log at each commit: its hub
    moves its head to the announced position. A socket that opens afterwards, resuming
    from a cursor before those commits, replays them from the store, then gets the
    next one live: no gap, no duplicate."""
    sid = session_of(world, "carl")
    conv = start(world, "alex", members=("carl",), text="opening").conversation.id
    while relay_once(world.runtime.db) is not None:  # no relay runs yet: by hand
        pass
    with unit_of_work(world.runtime.db, write=False) as uow:
        before = uow.event_log.head()

    async def scenario() -> tuple[int, list[str]]:
        broker = MemoryBroker()
        hub = Hub(world.runtime.db, broker, world.runtime.session_policy, ApiRenderer())
        relay = OutboxRelay(world.runtime.db, broker)
        await hub.start()
        await relay.start()
        reads = 0
        real = hub._read_and_build

        def counted(after: int, audience: Any) -> Any:
            nonlocal reads
            reads += 1
            return real(after, audience)

        hub._read_and_build = counted  # type: ignore[method-assign]
        late = Recorder(cursor=before)
        try:
            for text in ("a", "b", "c"):
                await asyncio.to_thread(send, world, "alex", conv, text)
            with unit_of_work(world.runtime.db, write=False) as uow:
                head = uow.event_log.head()
            deadline = time.monotonic() + WAIT
            while hub.head < head and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert hub.head == head
            skipped_reads = reads
            actor = world.actor("carl")
            serving = asyncio.create_task(
                hub.serve(late, Actor(actor.practice_id, actor.party, Via.PASSWORD), sid)
            )
            await asyncio.wait_for(late.ready.wait(), WAIT)
            await asyncio.to_thread(send, world, "alex", conv, "d")
            await asyncio.wait_for(late.until("d"), WAIT)
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        finally:
            await relay.stop()
            await hub.stop()
        return skipped_reads, late.texts

    skipped_reads, texts = asyncio.run(scenario())
    assert skipped_reads == 0
    assert texts == ["a", "b", "c", "d"]


class ResumingClient:
    """A socket for `Hub.serve` that sends `resume` (live only, or from `cursor`) once,
    then nothing."""

    def __init__(self, cursor: int = 0) -> None:
        self._resumed = False
        self._cursor = cursor

    async def receive(self) -> dict[str, Any]:
        if not self._resumed:
            self._resumed = True
            resume = json.dumps({"type": "resume", "cursor": self._cursor})
            return {"type": "websocket.receive", "text": resume}
        await asyncio.Event().wait()
        raise AssertionError


class Recorder(ResumingClient):
    """Records the messages it gets."""

    def __init__(self, cursor: int = 0) -> None:
        super().__init__(cursor)
        self.ready = asyncio.Event()
        self.texts: list[str] = []
        self._arrived = asyncio.Event()

    async def send_text(self, data: str) -> None:
        frame = json.loads(data)
        if frame["type"] == "ready":
            self.ready.set()
        elif frame["type"] == "message.created":
            self.texts.append(frame["message"]["text"])
            self._arrived.set()

    async def until(self, text: str) -> None:
        while text not in self.texts:
            self._arrived.clear()
            await self._arrived.wait()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


class StuckReader(ResumingClient):
    """A client that resumes and then never reads: its first frame never leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.got_ready = asyncio.Event()
        self.ready_position = 0
        self.closed_with: int | None = None

    async def send_text(self, data: str) -> None:
        frame = json.loads(data)
        if frame["type"] == "ready":
            self.ready_position = frame["position"]
            self.got_ready.set()
        await asyncio.Event().wait()  # never read

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


# -- the event log -------------------------------------------------------------------------


def test_nt5_the_relay_logs_each_event_once_in_commit_order(world: World, server: str):
    one = start(world, "alex", members=("carl",), text="one")
    two = start(world, "jordan", members=("betty",), text="two")
    senders = [
        threading.Thread(
            target=lambda c=c, who=who: [send(world, who, c, f"{who} {i}") for i in range(15)]
        )
        for c, who in ((one.conversation.id, "alex"), (two.conversation.id, "jordan"))
    ]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    while relay_once(world.runtime.db) is not None:  # beside the server's own relay
        pass
    with unit_of_work(world.runtime.db, write=False) as uow:
        events = uow.events.list_events(world.practice_a, after=0, limit=10_000)
    assert [e.position for e in events] == sorted({e.position for e in events})
    for conv in (one.conversation.id, two.conversation.id):
        created = [
            e.payload
            for e in events
            if e.kind == "message.created" and e.payload["conversation_id"] == conv
        ]
        assert [p["seq"] for p in created] == list(range(1, 17))  # once each, in order
        assert len({p["message_id"] for p in created}) == 16
        assert all(set(p) == {"conversation_id", "message_id", "seq", "sender"} for p in created)


def test_nt5_a_commit_moves_its_own_outbox_rows_into_the_log_and_announces_them(world: World):
    """`relay_at_commit`: the send's transaction wrote its event itself (no relay round
    between the commit and the hub), the outbox row is done, and the position is
    announced after the commit only; a rolled-back transaction announces nothing."""
    conv = start(world, "carl", client="alex", text="first").conversation.id
    heard: list[tuple[int, bool]] = []
    db = world.runtime.db

    def announce(position: int) -> None:
        with unit_of_work(db, write=False) as uow:  # committed by the time it is heard
            heard.append((position, uow.event_log.head() >= position))

    stop = relay_at_commit(db, EVENT_KINDS, announce, limit=500)
    try:
        sent = send(world, "carl", conv, "moved by its own commit")
        [(position, visible)] = heard
        assert visible
        with unit_of_work(db, write=False) as uow:
            [event] = [e for e in uow.event_log.read_after(position - 1, limit=10)]
            assert not uow.event_log.has_pending_outbox(EVENT_KINDS)
        assert event.kind == "message.created"
        assert event.payload["message_id"] == sent.message.id
        with unit_of_work(db) as uow:  # left without commit: rolled back
            uow.outbox.add(world.practice_a, "away.changed", member_id=world.id("carl"))
        assert len(heard) == 1
    finally:
        stop()


def test_nt5_the_event_log_migration_reverses_and_positions_are_never_reused(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not [d for d in diffs if "events" in repr(d)]
    migrate.downgrade(engine, "0001")
    assert "events" not in inspect(engine).get_table_names()
    migrate.upgrade(engine)
    db = Database(engine, KeyRing(bytes(32)))

    def add_events(n: int) -> int | None:
        with unit_of_work(db) as uow:
            for i in range(n):
                uow.outbox.add(PracticeId(1), "away.changed", member_id=i)
            uow.outbox.add(PracticeId(1), "email.someday", member_id=0)  # not ours
            uow.commit()
        return relay_once(db)

    assert add_events(3) == 3
    with unit_of_work(db) as uow:
        assert uow.event_log.prune(datetime.now(UTC) + timedelta(days=1)) == 2
        uow.commit()
        assert uow.event_log.oldest() == uow.event_log.head() == 3  # the newest stays
    assert add_events(1) == 4  # never 1 again
    assert relay_once(db) is None
    engine.dispose()


def test_en6_the_practice_switch_and_a_contacts_box_close_client_side_sockets(
    world: World, server: str
):
    pat, alex = live(server, session_of(world, "pat")), live(server, session_of(world, "alex"))
    carl = live(server, session_of(world, "carl"))
    with unit_of_work(world.runtime.db) as uow:
        clients.set_contact_messaging(
            uow, world.actor("olivia"), world.id("pat"), messaging_enabled=False
        )
    assert pat.close_code() == 4403
    with unit_of_work(world.runtime.db) as uow:
        practice.set_messaging_switches(uow, world.actor("olivia"), clients=False)
    assert alex.close_code() == 4403
    carl.send({"type": "ping"})  # the team's sockets stay open
    assert carl.next_of("pong")


# -- the periodic session check -------------------------------------------------------------


def session_queries(runtime: Runtime) -> tuple[list[set[str]], Callable[[], None]]:
    """Records the string parameters of each SELECT on `sessions`; returns them and a
    function that stops recording."""
    seen: list[set[str]] = []

    def on_execute(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM sessions" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters or ()
            seen.append({v for v in values if isinstance(v, str)})

    event.listen(runtime.db.engine, "before_cursor_execute", on_execute)
    return seen, lambda: event.remove(runtime.db.engine, "before_cursor_execute", on_execute)


def test_pa5_the_hub_reads_a_sockets_session_when_new_or_due_not_every_tick(
    world: World, server: str
):
    ids = [session_of(world, name) for name in ("carl", "betty", "olivia", "alex") * 10]
    hashes = {token_hash(sid) for sid in ids}
    seen, stop = session_queries(world.runtime)
    try:
        socks = [live(server, sid) for sid in ids]  # 40 sockets, 40 sessions
        deadline = time.monotonic() + WAIT
        # The handshake reads its one session; then the hub's check reads the sessions
        # that are new in a tick, together (one query per 500).
        while any(sum(h in q for q in list(seen)) < 2 for h in hashes):
            assert time.monotonic() < deadline, "the hub did not check the new sessions"
            time.sleep(0.05)
        read = len(seen)
        time.sleep(3.5)  # three ticks of the hub's check (one second apart)
        later = list(seen)[read:]
    finally:
        stop()
    # None of these sessions is due for 15 minutes: the ticks do not read them again.
    assert not any(hashes & query for query in later)
    for sock in socks:  # and every socket is still open
        sock.send({"type": "ping"})
        assert sock.next_of("pong")


def test_pa5_many_sessions_are_read_500_to_a_query(world: World):
    real = {token_hash(session_of(world, "carl")) for _ in range(3)}
    unknown = {f"{i:064x}" for i in range(1_100)}
    seen, stop = session_queries(world.runtime)
    try:
        with unit_of_work(world.runtime.db, write=False) as uow:
            found = uow.sessions.find_live_sessions(real | unknown)
    finally:
        stop()
    assert set(found) == real
    assert len(seen) == 3 and sorted(len(q) for q in seen) == [103, 500, 500]
