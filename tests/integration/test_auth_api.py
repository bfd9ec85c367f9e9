"""The authentication seam: password sign-in, server-side sessions, API tokens, CSRF."""

import uuid
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import text

from confide.store.clock import utcnow
from tests.personas import PASSWORD, World, anonymous, start


def login(world: World, name: str, password: str = PASSWORD):
    client = anonymous(world.runtime)
    r = client.post("/api/v1/auth/login", json={"email": world.emails[name], "password": password})
    return client, r


def test_pa5_sign_in_sets_a_host_prefixed_secure_http_only_cookie(world: World):
    client, r = login(world, "carl")
    assert r.status_code == 204
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-confide_session=")
    for attr in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert attr.lower() in cookie.lower()
    me = client.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["id"] == world.id("carl")


def test_pa4_wrong_password_and_unknown_email_get_the_same_answer(world: World):
    _, wrong = login(world, "carl", "not the password")
    client = anonymous(world.runtime)
    unknown = client.post(
        "/api/v1/auth/login", json={"email": "nobody@nowhere.test", "password": "whatever"}
    )
    assert wrong.status_code == unknown.status_code == 422
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "sign_in_failed"
    assert "set-cookie" not in wrong.headers


def test_pa5_deactivated_member_cannot_sign_in_and_loses_sessions(world: World):
    client, _ = login(world, "carl")
    token = world.signed_in("carl")  # an API token
    conversation = start(world, "carl", members=("olivia",)).conversation.id
    r = world.api("olivia").patch(f"/api/v1/members/{world.id('carl')}", json={"active": False})
    assert r.status_code == 200
    assert client.get("/api/v1/me").status_code == 401
    assert token.get("/api/v1/unread").status_code == 401
    sent = token.post(
        f"/api/v1/conversations/{conversation}/messages",
        json={"text": "still here?", "idempotency_key": "after-deactivation"},
    )
    assert sent.status_code == 401
    _, again = login(world, "carl")
    assert again.status_code == 422


def test_pa5_idle_and_absolute_limits_are_enforced_on_the_server(world: World):
    client, _ = login(world, "carl")
    start = utcnow()
    with time_machine.travel(start + timedelta(minutes=14), tick=False):
        assert client.get("/api/v1/me").status_code == 200  # moves the idle timer
    with time_machine.travel(start + timedelta(minutes=28), tick=False):
        assert client.get("/api/v1/me").status_code == 200
    with time_machine.travel(start + timedelta(minutes=44), tick=False):
        assert client.get("/api/v1/me").status_code == 401  # idle 16 minutes
    client2, _ = login(world, "carl")
    t = utcnow()
    for minutes in range(10, 12 * 60, 10):
        with time_machine.travel(t + timedelta(minutes=minutes), tick=False):
            assert client2.get("/api/v1/me").status_code == 200, minutes
    with time_machine.travel(t + timedelta(hours=12, minutes=1), tick=False):
        assert client2.get("/api/v1/me").status_code == 401


def test_pa5_a_send_moves_the_idle_timer_and_an_idle_session_ends_at_a_send(world: World):
    """The send path authenticates inside its group commit's transaction: a session
    seen a while ago is touched with the message; an expired one is ended and audited
    even though the send is refused."""
    conv = start(world, "carl", client="alex").conversation.id
    client, _ = login(world, "carl")
    path = f"/api/v1/conversations/{conv}/messages"
    t = utcnow()
    for minutes in (10, 20, 30):  # each send keeps the session alive (idle limit 15)
        with time_machine.travel(t + timedelta(minutes=minutes), tick=False):
            r = client.post(path, json={"text": f"at {minutes}", "idempotency_key": f"s{minutes}"})
            assert r.status_code == 201, r.text
    expired = "SELECT count(*) FROM audit_log WHERE action = 'session.expired'"
    late = "SELECT count(*) FROM messages WHERE idempotency_key = 's50'"
    with world.runtime.db.engine.connect() as conn:
        before = conn.execute(text(expired)).scalar_one()
    with time_machine.travel(t + timedelta(minutes=50), tick=False):
        r = client.post(path, json={"text": "too late", "idempotency_key": "s50"})
        assert r.status_code == 401
    with world.runtime.db.engine.connect() as conn:
        after = conn.execute(text(expired)).scalar_one()
        assert conn.execute(text(late)).scalar_one() == 0
    assert after == before + 1


def test_pa5_sign_out_ends_the_server_side_session(world: World):
    client, _ = login(world, "carl")
    cookie = client.cookies.get("__Host-confide_session")
    assert client.post("/api/v1/auth/logout").status_code == 204
    replay = anonymous(world.runtime)
    replay.cookies.set("__Host-confide_session", cookie, domain="testserver.local")
    assert replay.get("/api/v1/me").status_code == 401


def test_pa7_session_ids_and_api_tokens_are_stored_only_as_hashes(world: World):
    client, _ = login(world, "carl")
    session_id = client.cookies.get("__Host-confide_session")
    token = world.api("carl").post("/api/v1/tokens", json={"name": "laptop"}).json()["token"]
    assert len(session_id) >= 43 and token.startswith("cfd_")
    with world.runtime.db.engine.connect() as conn:
        for table in ("sessions", "api_tokens", "audit_log", "outbox"):
            dump = " ".join(str(r) for r in conn.execute(text(f"SELECT * FROM {table}")))  # noqa: S608
            assert session_id not in dump and token not in dump, table


def test_api_token_works_until_revoked(world: World):
    r = world.api("carl").post("/api/v1/tokens", json={"name": "script"})
    assert r.status_code == 201
    token_id, token = r.json()["id"], r.json()["token"]
    client = anonymous(world.runtime)
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.get("/api/v1/me").json()["id"] == world.id("carl")
    assert world.api("bill").delete(f"/api/v1/tokens/{token_id}").status_code == 404
    assert world.api("carl").delete(f"/api/v1/tokens/{token_id}").status_code == 204
    assert client.get("/api/v1/me").status_code == 401


def test_csrf_cookie_requests_from_another_origin_are_refused(world: World):
    client, _ = login(world, "carl")
    for origin in ("https://evil.example", "null"):
        r = client.put("/api/v1/me/away", json={"on": True}, headers={"Origin": origin})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = client.put(
        "/api/v1/me/away",
        content="on=true",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 403
    r = client.put("/api/v1/me/away", json={"on": True}, headers={"Origin": "https://testserver"})
    assert r.status_code == 200


def test_security_headers_on_every_response(world: World):
    for r in (
        anonymous(world.runtime).get("/api/v1/me"),
        world.api("carl").get("/api/v1/conversations"),
        anonymous(world.runtime).get("/api/v1/nope"),
    ):
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        assert r.headers["strict-transport-security"].startswith("max-age=")


def test_rc1_sign_in_attempts_are_audited(world: World):
    login(world, "carl", "wrong")
    login(world, "carl")
    with world.runtime.db.engine.connect() as conn:
        actions = [
            a
            for (a,) in conn.execute(
                text(
                    "SELECT action FROM audit_log"
                    " WHERE chain_id = :p AND actor_id = :m ORDER BY seq"
                ),
                {"p": world.practice_a, "m": world.id("carl")},
            )
        ]
    assert actions[-2:] == ["signin.failed", "session.started"]


def test_unknown_email_failure_is_audited_without_the_email(world: World):
    email = f"nobody-{uuid.uuid4().hex}@nowhere.test"
    anonymous(world.runtime).post("/api/v1/auth/login", json={"email": email, "password": "x"})
    with world.runtime.db.engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM audit_log")))
    assert email not in dump


def _signed_in_routes(conv: int) -> dict[str, tuple[str, str, dict[str, object] | None]]:
    return {
        "unread (read)": ("GET", "/api/v1/unread", None),
        "list (read)": ("GET", "/api/v1/conversations", None),
        "page (write)": ("GET", f"/api/v1/conversations/{conv}?mark_read=false", None),
        "mark read (write)": ("POST", f"/api/v1/conversations/{conv}/read", {"seq": 0}),
    }


@pytest.mark.parametrize("route", list(_signed_in_routes(0)))
def test_pa5_routes_that_authenticate_in_their_own_transaction_move_and_end_sessions(
    world: World, route: str
):
    """`deps.signed_in`: the conversation routes authenticate inside their own unit of
    work (read or write). A session seen a while ago still has its idle timer moved
    (a read route moves it in a write transaction after its work); an expired one is
    ended and audited, and the request refused."""
    conv = start(world, "carl", client="alex").conversation.id
    method, path, body = _signed_in_routes(conv)[route]
    client, _ = login(world, "carl")
    t = utcnow()
    for minutes in (10, 20, 30):  # each request keeps the session alive (idle limit 15)
        with time_machine.travel(t + timedelta(minutes=minutes), tick=False):
            r = client.request(method, path, json=body)
            assert r.status_code == 200, (minutes, r.text)
    expired = "SELECT count(*) FROM audit_log WHERE action = 'session.expired'"
    with world.runtime.db.engine.connect() as conn:
        before = conn.execute(text(expired)).scalar_one()
    with time_machine.travel(t + timedelta(minutes=50), tick=False):
        assert client.request(method, path, json=body).status_code == 401
    with world.runtime.db.engine.connect() as conn:
        assert conn.execute(text(expired)).scalar_one() == before + 1
    with time_machine.travel(t + timedelta(minutes=40), tick=False):  # ended, not just idle
        assert client.get("/api/v1/me").status_code == 401
