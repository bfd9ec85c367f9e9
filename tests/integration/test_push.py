"""NT4: Web Push with VAPID. Payloads are decrypted by a local push service with each
subscription's keys (tests/push_service.py): they hold ids and a generic title only,
padded to one size (NT1); a 404/410 from the push service removes the subscription."""

import json
import stat
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from confide.auth.vapid import load_or_create
from confide.jobs.outbox import relay_once
from confide.jobs.push import PushSender, deliver_push, push_once
from confide.runtime import Runtime
from confide.store.clock import utcnow
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests.conftest import serving
from tests.personas import World, start
from tests.push_service import PushService, running_push_service

API = "/api/v1"


@pytest.fixture(scope="module")
def pushsvc() -> Iterator[PushService]:
    with running_push_service() as svc:
        yield svc


@pytest.fixture
def running_app(runtime: Runtime) -> Iterator[str]:
    """The app with its lifespan (outbox relay, push consumer), as `confide serve` runs
    it, for one test only. A module-wide one stayed up for the later tests of this
    module: its consumer pushed their events to their devices too (on its own cursor),
    so a test that counts a device's pushes saw 2 now and then."""
    with serving(create_app(runtime)) as address:
        yield address


@pytest.fixture
def sender(runtime: Runtime) -> PushSender:
    s = runtime.settings
    return PushSender(load_or_create(pem=None, path=s.vapid_key_file, subject=s.vapid_subject))


def subscribe(world: World, name: str, svc: PushService, *, status: int = 201):
    device = svc.device(name, status=status)
    r = world.api(name).post(f"{API}/push/subscriptions", json=device.subscription())
    assert r.status_code == 201, r.text
    return device, r.json()["id"]


def drain(runtime: Runtime, sender: PushSender) -> None:
    """After commit: the relay moves outbox rows into the log, the consumer pushes."""
    while relay_once(runtime.db) is not None:
        pass
    while push_once(runtime.db, sender):
        pass


def test_nt4_vapid_keys_are_made_at_first_start_and_kept(tmp_path):
    path = tmp_path / "vapid_private.pem"
    first = load_or_create(pem=None, path=path, subject="mailto:ops@practice.test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create(pem=None, path=path, subject="mailto:ops@practice.test")
    assert first.public_key == again.public_key
    assert len(first.public_key) == 87  # base64url of a 65-byte uncompressed P-256 point
    # In production, the key comes from a setting (the same on every process).
    pem = path.read_text()
    other = load_or_create(pem=pem, path=tmp_path / "unused.pem", subject="x")
    assert other.public_key == first.public_key
    assert not (tmp_path / "unused.pem").exists()


def test_nt4_subscriptions_belong_to_who_made_them(world: World, pushsvc: PushService):
    key = world.api("carl").get(f"{API}/push/vapid-public-key").json()["public_key"]
    assert key and key == world.api("alex").get(f"{API}/push/vapid-public-key").json()["public_key"]
    _device, sub_id = subscribe(world, "carl", pushsvc)
    for bad in (
        {"endpoint": "ftp://127.0.0.1/x"},
        {"keys": {"p256dh": "AAAA", "auth": "AAAA"}},
        {"endpoint": "https://user:pw@push.example.test/x"},
    ):
        body = pushsvc.device("carl").subscription()
        body.update(bad)
        r = world.api("carl").post(f"{API}/push/subscriptions", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_subscription"
    assert world.api("fiona").delete(f"{API}/push/subscriptions/{sub_id}").status_code == 404
    assert world.api("owen").delete(f"{API}/push/subscriptions/{sub_id}").status_code == 404
    assert world.api("carl").delete(f"{API}/push/subscriptions/{sub_id}").status_code == 204
    assert world.api("carl").delete(f"{API}/push/subscriptions/{sub_id}").status_code == 404


def test_nt4_nt1_payloads_hold_only_ids_and_a_generic_title(
    world: World, pushsvc: PushService, sender: PushSender, runtime: Runtime
):
    drain(runtime, sender)  # the consumer's cursor starts at the log's head
    alex_phone, _ = subscribe(world, "alex", pushsvc)
    carl_phone, _ = subscribe(world, "carl", pushsvc)
    carl_laptop, _ = subscribe(world, "carl", pushsvc)
    marker = f"MARKER-{uuid.uuid4().hex}"
    sent = start(world, "carl", client="alex", text=f"{marker} about your {marker} session")
    conv = sent.conversation.id
    r = world.api("alex").post(
        f"{API}/conversations/{conv}/messages",
        json={"text": f"reply {marker}", "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 201
    drain(runtime, sender)
    to_alex, to_phone, to_laptop = (
        pushsvc.for_device(alex_phone),
        pushsvc.for_device(carl_phone),
        pushsvc.for_device(carl_laptop),
    )
    assert len(to_alex) == len(to_phone) == len(to_laptop) == 1  # not to the sender
    everything = to_alex + to_phone + to_laptop
    for got in everything:
        assert got.plaintext is not None and len(got.plaintext) == 256
        assert len(got.body) == len(everything[0].body)  # one size for every push
        payload = json.loads(got.plaintext)
        assert set(payload) == {"type", "title", "body", "conversation_id", "url", "tag"}
        assert payload["type"] == "new_message" and payload["title"] == "New secure message"
        assert payload["conversation_id"] == conv
        seen = got.plaintext.decode() + json.dumps(got.headers)
        for secret in (marker, "Alex", "Carl", "Maple", world.emails["carl"], "alex."):
            assert secret not in seen
        claims = got.vapid_claims
        assert claims is not None and claims["_k"] == sender.keys.public_key
        assert claims["aud"] == pushsvc.base and claims["sub"] == sender.keys.subject
        assert claims["exp"] > time.time()
    assert json.loads(to_alex[0].plaintext or b"")["url"] == f"/portal/{conv}"
    assert json.loads(to_phone[0].plaintext or b"")["url"] == f"/messages/{conv}"


def test_nt4_the_new_message_preference_turns_pushes_off(
    world: World, pushsvc: PushService, sender: PushSender, runtime: Runtime
):
    carl = world.api("carl")
    assert carl.get(f"{API}/push/preferences").json() == {"new_message": True}
    phone, _ = subscribe(world, "carl", pushsvc)
    r = carl.put(f"{API}/push/preferences", json={"new_message": False})
    assert r.status_code == 200 and r.json() == {"new_message": False}
    bad = carl.put(f"{API}/push/preferences", json={"nonsense": True})
    assert bad.status_code == 422
    sent = start(world, "alex", members=("carl",), text="hello")
    assert deliver_push(runtime.db, sender, world.practice_a, sent.conversation.id, None) == 0
    assert pushsvc.for_device(phone) == []
    carl.put(f"{API}/push/preferences", json={"new_message": True})
    assert deliver_push(runtime.db, sender, world.practice_a, sent.conversation.id, None) == 1


def test_nt4_a_gone_subscription_is_removed(
    world: World, pushsvc: PushService, sender: PushSender, runtime: Runtime
):
    gone, gone_id = subscribe(world, "carl", pushsvc, status=410)
    missing, _ = subscribe(world, "carl", pushsvc, status=404)
    alive, _ = subscribe(world, "carl", pushsvc)
    sent = start(world, "alex", members=("carl",), text="are you there")
    assert deliver_push(runtime.db, sender, world.practice_a, sent.conversation.id, None) == 1
    assert len(pushsvc.for_device(gone)) == len(pushsvc.for_device(missing)) == 1
    with unit_of_work(runtime.db, write=False) as uow:
        left = uow.push.list_subscriptions(world.practice_a, [world.parties["carl"]])
    assert [s.endpoint for s in left] == [alive.endpoint]
    assert deliver_push(runtime.db, sender, world.practice_a, sent.conversation.id, None) == 1
    assert len(pushsvc.for_device(gone)) == 1  # not tried again
    assert world.api("carl").delete(f"{API}/push/subscriptions/{gone_id}").status_code == 404


def test_nt4_nobody_who_may_not_read_the_conversation_gets_a_push(
    world: World, pushsvc: PushService, sender: PushSender, runtime: Runtime
):
    phone, _ = subscribe(world, "alex", pushsvc)
    sent = start(world, "carl", client="alex", text="hi")
    r = world.api("carl").patch(
        f"{API}/clients/{world.id('alex')}/portal", json={"messaging_enabled": False}
    )
    assert r.status_code == 200
    assert deliver_push(runtime.db, sender, world.practice_a, sent.conversation.id, None) == 0
    assert pushsvc.for_device(phone) == []


def test_nt4_pushes_go_out_after_commit_from_the_running_app(
    world: World,
    pushsvc: PushService,
    running_app: str,
):
    phone, _ = subscribe(world, "alex", pushsvc)
    time.sleep(1.5)  # the consumer's cursor starts at the head when it first runs
    sent = world.api("carl").post(
        f"{API}/conversations",
        json={
            "member_ids": [],
            "client_id": world.id("alex"),
            "text": "Checking in",
            "idempotency_key": uuid.uuid4().hex,
        },
    )
    assert sent.status_code == 201, sent.text
    deadline = time.monotonic() + 10
    while not pushsvc.for_device(phone) and time.monotonic() < deadline:
        time.sleep(0.05)
    got = pushsvc.for_device(phone)
    assert len(got) == 1
    assert json.loads(got[0].plaintext or b"")["conversation_id"] == sent.json()["conversation_id"]


def test_nt4_only_conversations_with_a_subscribed_participant_are_looked_at(
    world: World, pushsvc: PushService
):
    """The push consumer's one query per batch: conversations where nobody subscribed
    cost no access checks (bench: push was half the server's CPU under send load)."""
    subscribe(world, "carl", pushsvc)
    with_carl = start(world, "alex", members=("carl",), text="for carl").conversation.id
    without = start(world, "sam", members=("olivia",), text="no devices").conversation.id
    with unit_of_work(world.runtime.db, write=False) as uow:
        found = uow.push.conversations_with_subscribers(world.practice_a, [with_carl, without])
        other_practice = uow.push.conversations_with_subscribers(world.practice_b, [with_carl])
    assert found == {with_carl}
    assert other_practice == set()


def _cursor_writes(world: World, name: str) -> tuple[list[str], Any]:
    """The statements that write the cursor `name`, as they run (SQLAlchemy's events;
    a consumer in a running app would use the cursor "push")."""
    seen: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        text = statement.lower()
        writes = "job_cursors" in text and not text.lstrip().startswith("select")
        if writes and name in repr(parameters):
            seen.append(text.split()[0])

    event.listen(world.runtime.db.engine, "before_cursor_execute", watch)
    return seen, watch


def test_nt4_rounds_without_pushes_to_send_cost_one_write_or_none(
    world: World, pushsvc: PushService, sender: PushSender
):
    """The consumer's writes wait for SQLite's one writer, with the sends: a round
    with nothing new writes nothing; a stretch with nothing to push (nobody subscribed
    in its conversations) moves the cursor in one write, without a lease; a stretch
    with pushes takes the lease, sends and gives it back. (A cursor of the test's own:
    on PostgreSQL the tests share one database.)"""
    name = f"push-{uuid.uuid4().hex[:12]}"
    db = world.runtime.db

    def relayed() -> None:
        while relay_once(db) is not None:
            pass

    start(world, "alex", members=("carl",), text="first")
    relayed()
    assert push_once(db, sender, cursor_name=name) is None  # a new cursor, at the head
    writes, watch = _cursor_writes(world, name)
    try:
        assert push_once(db, sender, cursor_name=name) is None  # nothing new
        assert writes == []
        start(world, "sam", members=("olivia",), text="nobody subscribed")
        relayed()
        assert push_once(db, sender, cursor_name=name) == 1  # passed over: one write
        assert writes == ["update"]
        with unit_of_work(db, write=False) as uow:
            assert uow.push.peek_cursor(name) == (uow.event_log.head(), None)
        writes.clear()
        device, _ = subscribe(world, "carl", pushsvc)
        start(world, "alex", members=("carl",), text="for carl")
        relayed()
        assert push_once(db, sender, cursor_name=name) == 1
        assert writes == ["update", "update"]  # the lease, then its release
        assert len(pushsvc.for_device(device)) == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", watch)


def test_nt4_a_held_lease_stops_other_rounds_even_with_nothing_to_push(
    world: World, sender: PushSender
):
    """Another process holds the cursor (its lease not lapsed): this one neither
    pushes nor moves the cursor past that process's batch."""
    name = f"push-{uuid.uuid4().hex[:12]}"
    db = world.runtime.db
    with unit_of_work(db) as uow:
        now = utcnow()
        at = uow.push.lease_cursor(name, now, now + timedelta(seconds=60), uow.event_log.head())
        uow.commit()
    assert at is not None
    start(world, "sam", members=("olivia",), text="nobody subscribed")
    while relay_once(db) is not None:
        pass
    assert push_once(db, sender, cursor_name=name) is None
    with unit_of_work(db) as uow:
        assert uow.push.peek_cursor(name) == (at, now + timedelta(seconds=60))
        # Lapsed now: the compare-and-set sees the lease as free and may move it.
        assert uow.push.advance_free_cursor(name, at, at + 1, now + timedelta(seconds=61))
        assert not uow.push.advance_free_cursor(name, at, at + 2, now)  # moved already
        uow.rollback()
