"""Issue 5 without email: the TOTP second factor (PA4), rate limits and lockout of
sign-in attempts, sessions (PA5: per-practice idle timeout, sign out everywhere, the
account owner ends a member's sessions), every step audited."""

import base64
import json
import re
import threading
import time
import uuid
from datetime import timedelta

import pyotp
import pytest
import time_machine
from sqlalchemy import select
from starlette.testclient import TestClient

from confide.auth.tokens import token_hash
from confide.realtime.hub import SESSION_CHECK_SECONDS
from confide.services import sessions
from confide.store.clock import utcnow
from confide.store.tables import (
    AuditRow,
    MemberTotpRow,
    RecoveryCodeRow,
    SessionRow,
    SigninChallengeRow,
)
from confide.store.uow import unit_of_work
from tests.integration.test_realtime import _close_sockets, live, server, session_of  # noqa: F401
from tests.personas import PASSWORD, World, anonymous

API = "/api/v1"
SESSION = "__Host-confide_session"
PENDING = "__Host-confide_signin"


def login(world: World, name: str, password: str = PASSWORD) -> tuple[TestClient, object]:
    client = anonymous(world.runtime)
    r = client.post(f"{API}/auth/login", json={"email": world.emails[name], "password": password})
    return client, r


def signed_in(world: World, name: str) -> TestClient:
    client, r = login(world, name)
    assert r.status_code == 204, r.text  # type: ignore[attr-defined]
    return client


class Clock:
    """Frozen time that moves one TOTP step (30 s) at a time: each code is fresh."""

    def __init__(self) -> None:
        self.now = utcnow()
        self._tm: time_machine.travel | None = time_machine.travel(self.now, tick=False)
        self._tm.start()

    def step(self, seconds: int = 30) -> None:
        self.stop()
        self.now += timedelta(seconds=seconds)
        self._tm = time_machine.travel(self.now, tick=False)
        self._tm.start()

    def stop(self) -> None:
        if self._tm is not None:
            self._tm.stop()
            self._tm = None


@pytest.fixture
def clock():
    c = Clock()
    yield c
    c.stop()


def code(secret: str, clock: Clock) -> str:
    return pyotp.TOTP(secret).at(clock.now)


def enroll(world: World, name: str, clock: Clock) -> tuple[TestClient, str, list[str]]:
    client = signed_in(world, name)
    e = client.post(f"{API}/me/second-factor/enrollment")
    assert e.status_code == 201, e.text
    secret = e.json()["secret"]
    r = client.post(f"{API}/me/second-factor/confirm", json={"code": code(secret, clock)})
    assert r.status_code == 200, r.text
    clock.step()
    return client, secret, r.json()["recovery_codes"]


def two_step(world: World, name: str, second: str) -> tuple[TestClient, object]:
    client, r = login(world, name)
    assert r.status_code == 200 and r.json() == {"second_factor_required": True}  # type: ignore[attr-defined]
    done = client.post(f"{API}/auth/login/second-factor", json={"code": second})
    return client, done


def audit_actions(world: World, practice_id: int) -> list[str]:
    with unit_of_work(world.runtime.db, write=False) as uow:
        return list(
            uow.conn.execute(
                select(AuditRow.action)
                .where(AuditRow.chain_id == practice_id)
                .order_by(AuditRow.seq)
            ).scalars()
        )


# -- enrollment --------------------------------------------------------------------------


def test_pa4_enrollment_shows_a_qr_code_and_confirms_with_a_code(world: World, clock: Clock):
    client = signed_in(world, "carl")
    assert client.get(f"{API}/me/second-factor").json()["enrolled"] is False
    e = client.post(f"{API}/me/second-factor/enrollment")
    assert e.status_code == 201
    body = e.json()
    assert re.fullmatch(r"[A-Z2-7]{32}", body["secret"])
    assert body["otpauth_uri"].startswith("otpauth://totp/Confide:")
    assert body["qr_svg"].startswith("<svg") and "<script" not in body["qr_svg"]
    status = client.get(f"{API}/me/second-factor").json()
    assert status["enrollment_pending"] and not status["enrolled"]
    wrong = client.post(f"{API}/me/second-factor/confirm", json={"code": "000000"})
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "second_factor_code_invalid"
    ok = client.post(f"{API}/me/second-factor/confirm", json={"code": code(body["secret"], clock)})
    assert ok.status_code == 200
    codes = ok.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    status = client.get(f"{API}/me/second-factor").json()
    assert status == {
        "enrolled": True,
        "enrollment_pending": False,
        "recovery_codes_left": 10,
        "required_by_practice": False,
    }
    again = client.post(f"{API}/me/second-factor/enrollment")
    assert again.status_code == 409
    assert "second_factor.enabled" in audit_actions(world, world.practice_a)


def test_pa4_pa7_secret_is_encrypted_at_rest_and_only_recovery_code_hashes_are_stored(
    world: World, clock: Clock
):
    _client, secret, codes = enroll(world, "carl", clock)
    with unit_of_work(world.runtime.db, write=False) as uow:
        stored = uow.conn.execute(
            select(MemberTotpRow.secret).where(MemberTotpRow.member_id == world.id("carl"))
        ).scalar_one()
        hashes = list(
            uow.conn.execute(
                select(RecoveryCodeRow.code_hash).where(
                    RecoveryCodeRow.member_id == world.id("carl")
                )
            ).scalars()
        )
    assert secret.encode() not in stored
    assert base64.b32decode(secret) not in stored
    assert len(hashes) == 10
    flat = " ".join(hashes)
    for c in codes:
        assert c not in flat and c.replace("-", "") not in flat
    if world.runtime.db.engine.dialect.name == "sqlite":
        world.runtime.db.engine.dispose()  # flush nothing pending; read the files as they are
        path = world.runtime.settings.data_dir / "confide.db"
        raw = b"".join(
            p.read_bytes() for p in (path, path.with_name("confide.db-wal")) if p.exists()
        )
        assert secret.encode() not in raw
        assert not [c for c in codes if c.encode() in raw or c.replace("-", "").encode() in raw]


# -- two-step sign-in --------------------------------------------------------------------


def test_pa4_sign_in_takes_two_steps_and_the_pending_step_grants_nothing(
    world: World, clock: Clock
):
    _c, secret, _codes = enroll(world, "carl", clock)
    client, r = login(world, "carl")
    assert r.status_code == 200  # type: ignore[attr-defined]
    assert SESSION not in client.cookies
    pending = client.cookies.get(PENDING)
    assert pending
    cookie = r.headers["set-cookie"].lower()  # type: ignore[attr-defined]
    for attr in ("httponly", "secure", "max-age=300"):
        assert attr in cookie
    # PA7: only the pending token's hash is stored.
    with unit_of_work(world.runtime.db, write=False) as uow:
        stored = list(uow.conn.execute(select(SigninChallengeRow.id_hash)).scalars())
    assert token_hash(pending) in stored and pending not in stored
    # The pending step is not a session: nothing but the second step accepts it.
    assert client.get(f"{API}/me").status_code == 401
    assert client.get(f"{API}/conversations").status_code == 401
    stolen = anonymous(world.runtime)
    stolen.cookies.set(SESSION, pending, domain="testserver.local")
    assert stolen.get(f"{API}/me").status_code == 401
    wrong = client.post(f"{API}/auth/login/second-factor", json={"code": "123456"})
    assert wrong.status_code == 422
    done = client.post(f"{API}/auth/login/second-factor", json={"code": code(secret, clock)})
    assert done.status_code == 204, done.text
    session_id = client.cookies.get(SESSION)
    assert session_id and session_id != pending  # a new id at step-up
    me = client.get(f"{API}/me")
    assert me.status_code == 200 and me.json()["id"] == world.id("carl")
    # The pending step is spent.
    replay = anonymous(world.runtime)
    replay.cookies.set(PENDING, pending, domain="testserver.local")
    clock.step()
    again = replay.post(f"{API}/auth/login/second-factor", json={"code": code(secret, clock)})
    assert again.status_code == 401
    actions = audit_actions(world, world.practice_a)
    assert "signin.second_factor_requested" in actions
    assert "signin.second_factor_failed" in actions
    with unit_of_work(world.runtime.db, write=False) as uow:
        vias = set(
            uow.conn.execute(
                select(SessionRow.via).where(SessionRow.party_id == world.id("carl"))
            ).scalars()
        )
    assert "password_totp" in vias


def test_pa4_the_same_totp_code_is_refused_the_second_time(world: World, clock: Clock):
    _c, secret, _codes = enroll(world, "carl", clock)
    used = code(secret, clock)
    _client, first = two_step(world, "carl", used)
    assert first.status_code == 204  # type: ignore[attr-defined]
    clock.step(5)  # still the same 30-second window
    _client, replay = two_step(world, "carl", used)
    assert replay.status_code == 422  # type: ignore[attr-defined]
    # The previous step's code, still inside the drift window, is refused too.
    clock.step(30)
    _client, older = two_step(
        world, "carl", pyotp.TOTP(secret).at(clock.now - timedelta(seconds=60))
    )
    assert older.status_code == 422  # type: ignore[attr-defined]
    _client, fresh = two_step(world, "carl", code(secret, clock))
    assert fresh.status_code == 204  # type: ignore[attr-defined]


def test_pa4_recovery_codes_work_once_each(world: World, clock: Clock):
    _c, _secret, codes = enroll(world, "carl", clock)
    client, r = two_step(world, "carl", codes[0].upper())
    assert r.status_code == 204  # type: ignore[attr-defined]
    assert client.get(f"{API}/me/second-factor").json()["recovery_codes_left"] == 9
    _client, again = two_step(world, "carl", codes[0])
    assert again.status_code == 422  # type: ignore[attr-defined]
    assert "second_factor.recovery_code_used" in audit_actions(world, world.practice_a)


def test_pa4_the_pending_step_expires_after_5_minutes_and_5_wrong_codes(world: World, clock: Clock):
    _c, secret, _codes = enroll(world, "carl", clock)
    client, _r = login(world, "carl")
    clock.step(5 * 60 + 1)
    late = client.post(f"{API}/auth/login/second-factor", json={"code": code(secret, clock)})
    assert late.status_code == 401
    clock.step()
    client, _r = login(world, "carl")
    for _ in range(5):
        wrong = client.post(f"{API}/auth/login/second-factor", json={"code": "000000"})
        assert wrong.status_code in (422, 429)
    clock.step()
    spent = client.post(f"{API}/auth/login/second-factor", json={"code": code(secret, clock)})
    assert spent.status_code in (401, 429)


def test_pa4_disabling_needs_the_password_and_a_code(world: World, clock: Clock):
    client, secret, _codes = enroll(world, "carl", clock)
    url = f"{API}/me/second-factor/disable"
    bad_pw = client.post(url, json={"password": "not it", "code": code(secret, clock)})
    assert bad_pw.status_code == 403
    assert bad_pw.json()["error"]["code"] == "reauthentication_failed"
    bad_code = client.post(url, json={"password": PASSWORD, "code": "000000"})
    assert bad_code.status_code == 403
    clock.step()
    ok = client.post(url, json={"password": PASSWORD, "code": code(secret, clock)})
    assert ok.status_code == 204
    _client, r = login(world, "carl")
    assert r.status_code == 204  # type: ignore[attr-defined]
    assert "second_factor.disabled" in audit_actions(world, world.practice_a)


def test_pa4_new_recovery_codes_replace_the_old_ones(world: World, clock: Clock):
    client, secret, old = enroll(world, "carl", clock)
    r = client.post(
        f"{API}/me/second-factor/recovery-codes",
        json={"password": PASSWORD, "code": code(secret, clock)},
    )
    assert r.status_code == 200
    new = r.json()["recovery_codes"]
    assert len(new) == 10 and not set(new) & set(old)
    clock.step()
    _client, stale = two_step(world, "carl", old[1])
    assert stale.status_code == 422  # type: ignore[attr-defined]
    _client, fresh = two_step(world, "carl", new[1])
    assert fresh.status_code == 204  # type: ignore[attr-defined]


# -- the practice requires a second factor ----------------------------------------------------


def test_pa4_owner_requires_a_second_factor_and_members_must_enroll_before_anything_else(
    world: World, clock: Clock
):
    olivia = signed_in(world, "olivia")
    first = olivia.patch(f"{API}/practice/security", json={"require_second_factor": True})
    assert first.status_code == 403
    assert first.json()["error"]["code"] == "enroll_second_factor_first"
    priya = world.api("priya").patch(
        f"{API}/practice/security", json={"require_second_factor": True}
    )
    assert priya.status_code == 403 and priya.json()["error"]["code"] == "not_permitted"
    olivia, _secret, _codes = enroll(world, "olivia", clock)
    on = olivia.patch(f"{API}/practice/security", json={"require_second_factor": True})
    assert on.status_code == 200 and on.json()["require_second_factor"] is True

    carl = signed_in(world, "carl")  # no second factor yet: signs in, but ...
    blocked = carl.get(f"{API}/conversations")
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "second_factor_enrollment_required"
    assert world.api("carl").get(f"{API}/unread").status_code == 403  # API tokens too
    assert carl.get(f"{API}/me").status_code == 200
    assert carl.get(f"{API}/practice/security").json()["require_second_factor"] is True
    e = carl.post(f"{API}/me/second-factor/enrollment")
    assert e.status_code == 201
    assert world.api("carl").get(f"{API}/unread").status_code == 403  # not confirmed yet
    done = carl.post(
        f"{API}/me/second-factor/confirm", json={"code": code(e.json()["secret"], clock)}
    )
    assert done.status_code == 200
    assert carl.get(f"{API}/conversations").status_code == 200
    assert world.api("carl").get(f"{API}/unread").status_code == 200
    clock.step()
    # While required, nobody turns their own second factor off.
    off = carl.post(
        f"{API}/me/second-factor/disable",
        json={"password": PASSWORD, "code": code(e.json()["secret"], clock)},
    )
    assert off.status_code == 403
    assert off.json()["error"]["code"] == "second_factor_required_by_practice"
    # The other practice is not affected.
    assert world.api("owen").get(f"{API}/conversations").status_code == 200
    assert "practice.security_changed" in audit_actions(world, world.practice_a)


def test_pa4_pa5_a_member_who_must_enroll_has_no_socket(world: World, server: str, clock: Clock):  # noqa: F811
    olivia, _s, _c = enroll(world, "olivia", clock)
    clock.stop()  # real time from here: the server's hub checks sockets every second
    sock = live(server, session_of(world, "carl"))
    # Past the hub's first check of this new session (it reads new sessions each
    # second), so that only the change itself can close the socket: its event makes
    # every socket of the practice read its session again.
    time.sleep(2.5 * SESSION_CHECK_SECONDS)
    sock.send({"type": "ping"})
    assert sock.next_of("pong")  # still open before the change
    r = olivia.patch(f"{API}/practice/security", json={"require_second_factor": True})
    assert r.status_code == 200
    assert sock.close_code() == 4401


# -- rate limits and lockout -------------------------------------------------------------------


def test_pa4_five_failures_lock_the_account_and_unknown_emails_look_the_same(
    world: World, clock: Clock
):
    unknown = f"nobody-{uuid.uuid4().hex}@nowhere.test"
    answers = {}
    for email in (world.emails["carl"], unknown):
        client = anonymous(world.runtime)
        seen = []
        for _ in range(5):
            r = client.post(f"{API}/auth/login", json={"email": email, "password": "wrong pw"})
            seen.append((r.status_code, r.json()))
        # Locked now: even the right password is refused, with the same answer.
        r = client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
        seen.append((r.status_code, r.json()))
        assert "set-cookie" not in r.headers
        answers[email] = seen
    assert answers[world.emails["carl"]] == answers[unknown]
    assert [s for s, _ in answers[unknown]] == [422] * 5 + [429]
    assert answers[unknown][-1][1]["error"]["code"] == "sign_in_locked"
    # Other accounts are not affected.
    assert login(world, "fiona")[1].status_code == 204  # type: ignore[attr-defined]
    clock.step(15 * 60)
    assert login(world, "carl")[1].status_code == 204  # type: ignore[attr-defined]
    actions = audit_actions(world, world.practice_a)
    assert "signin.locked" in actions and "signin.refused_locked" in actions


def test_pa4_failed_second_factor_codes_count_towards_the_lockout(world: World, clock: Clock):
    enroll(world, "carl", clock)
    for _ in range(5):
        client, _r = login(world, "carl")
        client.post(f"{API}/auth/login/second-factor", json={"code": "000000"})
    client, r = login(world, "carl")
    assert r.status_code == 429  # type: ignore[attr-defined]


def test_pa4_too_many_failures_from_one_address_are_refused(world: World):
    policy = sessions.SessionPolicy(max_failures_ip=3, max_failures_account=100)
    ip = f"198.51.100.{uuid.uuid4().int % 250}"
    db, pw = world.runtime.db, world.runtime.passwords
    codes = []
    for i in range(4):
        with unit_of_work(db) as uow:
            try:
                sessions.sign_in_with_password(
                    uow,
                    pw,
                    email=f"x{i}-{uuid.uuid4().hex}@a.test",
                    password="x",
                    ip=ip,
                    policy=policy,
                )
            except Exception as exc:
                codes.append(getattr(exc, "code", type(exc).__name__))
    assert codes == ["sign_in_failed"] * 3 + ["sign_in_locked"]
    with unit_of_work(db) as uow:  # another address is not affected
        sid, _actor = sessions.sign_in_with_password(
            uow, pw, email=world.emails["carl"], password=PASSWORD, ip="192.0.2.7", policy=policy
        )
    assert sid


# -- sessions (PA5) -------------------------------------------------------------------------


def test_pa5_the_idle_timeout_is_a_practice_setting_of_5_to_60_minutes(world: World, clock: Clock):
    erin = world.api("erin")  # entire practice: may change practice settings
    for bad in (4, 61, 0):
        r = erin.patch(f"{API}/practice/security", json={"session_idle_minutes": bad})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_idle_minutes"
    assert (
        world.api("carl")
        .patch(f"{API}/practice/security", json={"session_idle_minutes": 30})
        .status_code
        == 403
    )
    r = erin.patch(f"{API}/practice/security", json={"session_idle_minutes": 5})
    assert r.status_code == 200 and r.json()["session_idle_minutes"] == 5
    carl, bea = signed_in(world, "carl"), signed_in(world, "bea")
    clock.step(4 * 60)
    assert carl.get(f"{API}/me").status_code == 200
    clock.step(5 * 60 + 1)
    assert carl.get(f"{API}/me").status_code == 401  # idle over 5 minutes
    assert bea.get(f"{API}/me").status_code == 200  # the other practice: 15 minutes
    r = erin.patch(f"{API}/practice/security", json={"session_idle_minutes": 60})
    carl = signed_in(world, "carl")
    clock.step(59 * 60)
    assert carl.get(f"{API}/me").status_code == 200


def test_pa5_sign_out_everywhere_ends_every_session_of_the_caller(world: World):
    a, b, fiona = signed_in(world, "carl"), signed_in(world, "carl"), signed_in(world, "fiona")
    assert a.post(f"{API}/auth/logout-everywhere").status_code == 204
    assert a.get(f"{API}/me").status_code == 401
    assert b.get(f"{API}/me").status_code == 401
    assert fiona.get(f"{API}/me").status_code == 200
    assert "session.ended_everywhere" in audit_actions(world, world.practice_a)


def test_pa5_sign_out_everywhere_revokes_the_members_api_tokens_too(world: World):
    """ "Everywhere" includes personal API tokens (docs/security.md): a script's token
    left alive would keep the account open after the member feared a leak."""
    browser = signed_in(world, "carl")
    script = world.signed_in("carl")  # a personal API token
    made = script.post(f"{API}/tokens", json={"name": "backup script"})
    assert made.status_code == 201, made.text
    second = anonymous(world.runtime)
    second.headers["Authorization"] = f"Bearer {made.json()['token']}"
    fiona = world.signed_in("fiona")  # another member's token stays
    assert second.get(f"{API}/me").status_code == 200
    assert browser.post(f"{API}/auth/logout-everywhere").status_code == 204
    assert browser.get(f"{API}/me").status_code == 401
    assert script.get(f"{API}/me").status_code == 401
    assert second.get(f"{API}/me").status_code == 401
    assert fiona.get(f"{API}/me").status_code == 200
    with unit_of_work(world.runtime.db, write=False) as uow:
        meta = uow.conn.execute(
            select(AuditRow.meta)
            .where(
                AuditRow.action == "session.ended_everywhere",
                AuditRow.chain_id == world.practice_a,
                AuditRow.target_id == world.id("carl"),
            )
            .order_by(AuditRow.seq.desc())
            .limit(1)
        ).scalar_one()
    assert json.loads(meta) == {"sessions": 1, "api_tokens": 2}


def test_pa5_sign_out_everywhere_with_an_api_token_revokes_that_token(world: World):
    script = world.signed_in("carl")
    assert script.post(f"{API}/auth/logout-everywhere").status_code == 204
    assert script.get(f"{API}/me").status_code == 401


def test_pa5_the_account_owner_ends_a_members_sessions_and_sockets(world: World, server: str):  # noqa: F811
    carl = signed_in(world, "carl")
    sock = live(server, session_of(world, "carl"))
    refused = world.api("priya").post(f"{API}/members/{world.id('carl')}/end-sessions")
    assert refused.status_code == 403
    assert carl.get(f"{API}/me").status_code == 200
    r = world.api("olivia").post(f"{API}/members/{world.id('carl')}/end-sessions")
    assert r.status_code == 200 and r.json()["ended"] == 2
    assert carl.get(f"{API}/me").status_code == 401
    assert sock.close_code() == 4401
    other = world.api("owen").post(f"{API}/members/{world.id('carl')}/end-sessions")
    assert other.status_code == 404
    assert "session.ended_by_owner" in audit_actions(world, world.practice_a)


def test_pa4_one_code_sent_twice_at_the_same_moment_signs_in_once(world: World, clock: Clock):
    _c, secret, _codes = enroll(world, "carl", clock)
    browsers = []
    for _ in range(4):
        client, r = login(world, "carl")
        assert r.status_code == 200  # type: ignore[attr-defined]
        browsers.append(client)
    the_code = code(secret, clock)
    results: list[int] = []
    barrier = threading.Barrier(len(browsers))

    def go(client: TestClient) -> None:
        barrier.wait()
        r = client.post(f"{API}/auth/login/second-factor", json={"code": the_code})
        results.append(r.status_code)

    threads = [threading.Thread(target=go, args=(b,)) for b in browsers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [204, 422, 422, 422]
