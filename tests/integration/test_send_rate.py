"""T11 (send part): message sends 10/s per sender with a burst of 20 (web/ratelimit.py).

Over the limit a send, or the start of a conversation, gets 429 `rate_limited` with a
Retry-After in whole seconds, and nothing is stored; other senders are not held up; a
second credential of the same person shares the person's bucket once it has sent once;
the pages' send forms count in the same bucket. The group committer's queue bound (T39)
is here too: past it a send is refused at once and nothing is queued.
"""

import dataclasses
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from starlette.testclient import TestClient

from confide.config import Settings
from confide.domain.actors import Actor, Via
from confide.domain.errors import Overloaded, RateLimited
from confide.runtime import Runtime
from confide.services import messaging, sessions
from confide.store.group import GroupCommitter
from confide.store.tables import MessageRow
from confide.store.uow import UnitOfWork, unit_of_work
from confide.web.app import create_app
from confide.web.ratelimit import TokenBuckets, admit_sender
from tests.personas import World, build_world, start

ORIGIN = "https://testserver"
T11_RATE, T11_BURST = 10.0, 20


def limited(runtime: Runtime, **limits: object) -> Runtime:
    """The test database, with the send limits of `limits` (the suite's own settings
    raise them: tests/conftest.py)."""
    return dataclasses.replace(runtime, settings=runtime.settings.model_copy(update=limits))


@pytest.fixture
def t11_world(runtime: Runtime) -> Iterator[World]:
    rt = limited(runtime, send_rate_per_second=T11_RATE, send_burst=T11_BURST)
    yield build_world(rt)
    rt.group.close()


@pytest.fixture
def slow_world(runtime: Runtime) -> Iterator[World]:
    """A bucket of 3 that refills once in 100 s: no token comes back during a test."""
    rt = limited(runtime, send_rate_per_second=0.01, send_burst=3)
    yield build_world(rt)
    rt.group.close()


def stored(world: World, conv: int) -> int:
    with world.runtime.db.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(MessageRow).where(MessageRow.conversation_id == conv)
        ).scalar_one()


def send(client: TestClient, conv: int, text: str = "hello"):
    return client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": text, "idempotency_key": uuid.uuid4().hex},
    )


def assert_rate_limited(r) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


def test_t11_defaults_are_10_a_second_with_a_burst_of_20():
    fields = Settings.model_fields
    assert fields["send_rate_per_second"].default == T11_RATE
    assert fields["send_burst"].default == T11_BURST


def test_t11_bucket_gives_the_burst_then_the_rate():
    now = [100.0]
    buckets = TokenBuckets(T11_RATE, T11_BURST, clock=lambda: now[0])
    assert [buckets.take("carl") for _ in range(T11_BURST)] == [0.0] * T11_BURST
    assert buckets.take("carl") == pytest.approx(0.1)  # one token comes back in 1/10 s
    assert buckets.take("sally") == 0.0  # per key
    now[0] += 0.1
    assert buckets.take("carl") == 0.0
    assert buckets.take("carl") > 0
    now[0] += 60  # idle: full again, never more than the burst
    assert sum(buckets.take("carl") == 0.0 for _ in range(T11_BURST + 5)) == T11_BURST
    # Retry-After is whole seconds, rounded up, at least 1.
    assert RateLimited(0.1).retry_after == 1
    assert RateLimited(2.01).retry_after == 3


def test_t11_bucket_memory_is_bounded():
    now = [0.0]
    buckets = TokenBuckets(T11_RATE, T11_BURST, max_keys=100, clock=lambda: now[0])
    for i in range(1_000):
        buckets.take(i)
        now[0] += 0.01
    assert len(buckets) <= 100


def test_t11_api_sends_over_the_limit_get_429_and_store_nothing(t11_world: World):
    conv = start(t11_world, "carl", client="alex").conversation.id
    app = create_app(t11_world.runtime)
    carl = api_client(app, t11_world, "carl")
    # The process's buckets on a stopped clock: the machine's speed cannot refill them.
    now = [1000.0]
    buckets = app.state.send_limiter.buckets
    buckets.clock = lambda: now[0]
    answers = [send(carl, conv, f"n{i}") for i in range(30)]
    # The first send is counted under the new token and then under carl (web/ratelimit.py):
    # carl's bucket gives the rest of the burst.
    assert [r.status_code for r in answers[:T11_BURST]] == [201] * T11_BURST
    for r in answers[T11_BURST:]:
        assert_rate_limited(r)
        assert r.headers["retry-after"] == "1"  # 0.1 s to the next token, rounded up
    assert stored(t11_world, conv) == 1 + T11_BURST  # the opening message + the accepted
    now[0] += 1.0  # one second: 10 more
    again = [send(carl, conv, f"m{i}").status_code for i in range(12)]
    assert again == [201] * 10 + [429] * 2
    assert stored(t11_world, conv) == 1 + T11_BURST + 10
    # Another sender is not held up.
    sally_conv = start(t11_world, "sally", members=("bill",)).conversation.id
    assert send(api_client(app, t11_world, "sally"), sally_conv).status_code == 201


def api_client(app: FastAPI, world: World, name: str) -> TestClient:
    """A client of `app` (one app: one process's buckets) with a new API token."""
    actor = world.actor(name)
    with unit_of_work(world.runtime.db) as uow:
        _id, token = sessions.create_api_token(uow, actor, name="t11")
    client = TestClient(app, base_url=ORIGIN, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def test_t11_a_second_credential_shares_the_senders_bucket(slow_world: World):
    conv = start(slow_world, "carl", client="alex").conversation.id
    app = create_app(slow_world.runtime)
    carl = api_client(app, slow_world, "carl")
    assert [send(carl, conv).status_code for _ in range(3)] == [201] * 3
    assert_rate_limited(send(carl, conv))
    # Starting a conversation counts in the same bucket.
    r = carl.post(
        "/api/v1/conversations",
        json={
            "client_id": slow_world.id("alex"),
            "text": "a new one",
            "idempotency_key": uuid.uuid4().hex,
        },
    )
    assert_rate_limited(r)
    # A new API token of carl's: its first send is counted under the token (it is not
    # known to be carl's before the group commit authenticates it) ...
    second = api_client(app, slow_world, "carl")
    assert send(second, conv).status_code == 201
    # ... and from then on under carl, whose bucket is empty.
    assert_rate_limited(send(second, conv))
    assert stored(slow_world, conv) == 1 + 3 + 1


def test_t11_page_send_forms_share_the_bucket(runtime: Runtime):
    rt = limited(runtime, send_rate_per_second=0.01, send_burst=2)
    try:
        world = build_world(rt)  # a bucket of 2 that refills once in 100 s
        conv = start(world, "carl", client="alex").conversation.id
        app: FastAPI = create_app(rt)
        http = TestClient(app, base_url=ORIGIN, raise_server_exceptions=False)
        http.headers["Origin"] = ORIGIN
        carl = world.actor("carl")
        with unit_of_work(rt.db) as uow:
            sid = sessions.start_session(uow, Actor(carl.practice_id, carl.party, Via.PASSWORD))
        http.cookies.set("__Host-confide_session", sid, domain="testserver.local")
        page = http.get(f"/messages/{conv}")
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert token, page.text[:300]

        def page_send(text: str):
            return http.post(
                f"/messages/{conv}/send",
                data={"csrf_token": token.group(1), "text": text, "idempotency_key": text},
                follow_redirects=False,
            )

        assert [page_send(f"page {i}").status_code for i in range(2)] == [303, 303]
        r = page_send("page over")
        assert r.status_code == 429, r.text[:300]
        assert int(r.headers["retry-after"]) >= 1
        assert stored(world, conv) == 3
        # The API's send route counts in the same bucket once carl's token is known.
        api = api_client(app, world, "carl")
        assert send(api, conv).status_code == 201  # first use of the token
        assert_rate_limited(send(api, conv))
        assert stored(world, conv) == 4
    finally:
        rt.group.close()


def test_t11_every_send_route_is_rate_limited(runtime: Runtime):
    """The routes that store a message: the pages' forms and `POST /conversations` use
    the `admit_sender` dependency; the API's send route checks the credentials itself
    (the test above and the one before prove it)."""
    app = create_app(runtime)
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.137
    if flatten is None:
        pairs: Iterator[tuple[Any, str]] = ((r, r.path) for r in app.routes)
    else:
        pairs = ((c.original_route, c.path) for c in flatten(app.routes))
    limited_routes = set()
    for route, path in pairs:
        if isinstance(route, APIRoute) and admit_sender in {d.call for d in _walk(route.dependant)}:
            limited_routes |= {(m, path) for m in route.methods}
    assert limited_routes == {
        ("POST", "/api/v1/conversations"),
        ("POST", "/messages/new"),
        ("POST", "/messages/{conversation_id}/send"),
        ("POST", "/portal/new"),
        ("POST", "/portal/{conversation_id}/send"),
    }


def _walk(dependant):
    for d in dependant.dependencies:
        yield d
        yield from _walk(d)


def test_t39_group_queue_bound_refuses_at_once_and_queues_nothing(t11_world: World):
    conv = start(t11_world, "carl", client="alex").conversation.id
    group = GroupCommitter(t11_world.runtime.db, max_pending=3)
    running, release = threading.Event(), threading.Event()
    actor = t11_world.actor("carl")

    def hold(uow: UnitOfWork) -> None:
        running.set()
        release.wait(10)

    def send_one(text: str):
        cmd = messaging.SendMessage(conv, text, uuid.uuid4().hex)
        return lambda uow: messaging.send_message(uow, actor, cmd)

    try:
        held = group.submit(hold)
        assert running.wait(10)  # the writer is busy: what follows waits in the queue
        queued = [group.submit(send_one(f"q{i}")) for i in range(3)]
        with pytest.raises(Overloaded) as refused:
            group.submit(send_one("over"))
        assert refused.value.status == 503 and refused.value.retry_after == 1
        release.set()
        held.result(10)
        assert [f.result(10).created for f in queued] == [True, True, True]
    finally:
        release.set()
        group.close()
    assert stored(t11_world, conv) == 1 + 3
