"""Email links (PA1, PA2, PA6, PA7; password reset): token properties, the scanner-safe
landing pages, the one-conversation link session, identical answers for known and
unknown addresses, and rate limits."""

import base64
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import inspect, text
from starlette.testclient import TestClient

from confide.domain.actors import Party
from confide.runtime import Runtime
from confide.services import clients, email_links
from confide.services.links import LinkRefused, Purpose, issue_link, peek_link, redeem_link
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from confide.web.deps import session_cookie_name
from tests.mailsink import SmtpSink, drain, make_runner
from tests.personas import PASSWORD, World, start

ORIGIN = "https://testserver"
SCANNER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/156.0.0.0 Safari/537.36"
)


@pytest.fixture
def sink():
    s = SmtpSink()
    s.start()
    yield s
    s.stop()


def anonymous(runtime: Runtime) -> TestClient:
    """A browser of its own address (the request limits count per IP)."""
    n = uuid.uuid4().int
    return TestClient(
        create_app(runtime),
        base_url=ORIGIN,
        raise_server_exceptions=False,
        client=(f"203.0.{n % 250}.{(n >> 8) % 250 + 1}", 50000),
    )


def runner_for(world: World, sink: SmtpSink):
    return make_runner(
        world.runtime, sink, practices=frozenset({world.practice_a, world.practice_b, 0})
    )


def client_email(world: World, name: str) -> str:
    with unit_of_work(world.runtime.db, write=False) as uow:
        party = world.parties[name]
        if party.kind.value == "contact":
            return str(uow.people.get_contact(world.practice_of[name], party.id).email)
        return str(uow.people.get_client(world.practice_of[name], party.id).email)


def issue(world: World, who: str, purpose: Purpose, ttl: timedelta, **kw: object) -> str:
    with unit_of_work(world.runtime.db) as uow:
        link = issue_link(uow, world.practice_of[who], purpose, world.parties[who], ttl=ttl, **kw)  # type: ignore[arg-type]
        uow.commit()
    return link.token


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def press(http: TestClient, url: str) -> tuple[int, str, dict[str, str]]:
    """What a person does: open the page, press its button (same origin)."""
    page = http.get(url)
    assert page.status_code == 200, page.text
    pre = re.search(r'name="pre" value="([^"]+)"', page.text)
    assert pre
    r = http.post(
        url, data={"pre": pre.group(1)}, headers={"Origin": ORIGIN}, follow_redirects=False
    )
    return r.status_code, r.headers.get("location", ""), dict(r.cookies)


# --- PA7: the token model ---------------------------------------------------------------


def _db_bytes(runtime: Runtime) -> bytes:
    """Everything the database holds: the SQLite files, or every row of every table."""
    if not runtime.settings.is_server_database:
        folder = Path(runtime.settings.data_dir)
        with runtime.db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(FULL)")
        return b"".join(p.read_bytes() for p in folder.glob("confide.db*"))
    out = []
    with runtime.db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            out += [str(r) for r in conn.execute(text(f'SELECT t::text FROM "{table}" t'))]  # noqa: S608
    return "\n".join(out).encode()


def test_pa7_tokens_have_256_bits_and_only_hashes_are_stored(world: World):
    tokens = [
        issue(world, "alex", Purpose.PORTAL, timedelta(hours=24), conversation_id=1),
        issue(world, "alex", Purpose.INSTANT_SIGN_IN, timedelta(minutes=10)),
        issue(world, "carl", Purpose.PASSWORD_RESET, timedelta(hours=1)),
    ]
    for token in tokens:
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == 32
    assert len(set(tokens)) == 3
    data = _db_bytes(world.runtime)
    for token in tokens:
        assert token.encode() not in data
    with unit_of_work(world.runtime.db, write=False) as uow:
        assert peek_link(uow, tokens[1], Purpose.INSTANT_SIGN_IN) is not None


@pytest.mark.parametrize(
    ("purpose", "ttl"),
    [
        (Purpose.PORTAL, timedelta(hours=24)),
        (Purpose.INSTANT_SIGN_IN, timedelta(minutes=10)),
    ],
)
def test_pa7_expiry_is_exact_at_both_edges(world: World, purpose: Purpose, ttl: timedelta):
    conv = start(world, "carl", client="alex", text="hi").conversation.id
    t0 = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(t0, tick=False) as clock:
        early = issue(world, "alex", purpose, ttl, conversation_id=conv)
        late = issue(world, "alex", purpose, ttl, conversation_id=conv)
        clock.move_to(t0 + ttl - timedelta(seconds=1))
        with unit_of_work(world.runtime.db) as uow:
            assert redeem_link(uow, early, purpose, ip=None).conversation_id == conv
            uow.commit()
        clock.move_to(t0 + ttl)
        with unit_of_work(world.runtime.db) as uow:
            assert peek_link(uow, late, purpose) is None
            with pytest.raises(LinkRefused):
                redeem_link(uow, late, purpose, ip=None)
        clock.move_to(t0 + ttl + timedelta(seconds=1))
        with unit_of_work(world.runtime.db) as uow, pytest.raises(LinkRefused):
            redeem_link(uow, late, purpose, ip=None)


def test_pa7_a_token_of_one_purpose_is_refused_for_another(world: World):
    http = anonymous(world.runtime)
    token = issue(world, "alex", Purpose.INSTANT_SIGN_IN, timedelta(minutes=10))
    with unit_of_work(world.runtime.db) as uow:
        for other in (Purpose.PORTAL, Purpose.PASSWORD_RESET, Purpose.INVITATION):
            with pytest.raises(LinkRefused):
                redeem_link(uow, token, other, ip=None)
    assert http.get(f"/l/m/{token}").status_code == 410
    assert http.get(f"/l/r/{token}").status_code == 410
    status, location, _ = press(http, f"/l/s/{token}")  # still good for its own purpose
    assert (status, location) == (303, "/portal")


def test_pa7_fifty_concurrent_redemptions_of_one_link_one_success(world: World):
    token = issue(world, "alex", Purpose.INSTANT_SIGN_IN, timedelta(minutes=10))
    barrier = threading.Barrier(50)
    results: list[str] = []
    lock = threading.Lock()

    def redeem() -> None:
        barrier.wait()
        try:
            with unit_of_work(world.runtime.db) as uow:
                done = email_links.redeem_instant_sign_in(uow, token, ip="127.0.0.1")
            outcome = done.session_id
        except LinkRefused:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=redeem) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 50
    assert sum(r != "refused" for r in results) == 1


# --- PA1, PA6: the notification's link, a scanner, the one-conversation session ---------


def test_pa1_pa7_mail_scanner_neither_uses_the_link_nor_gets_health_information(
    world: World, sink: SmtpSink
):
    canary = f"PHICANARY-{uuid.uuid4().hex}"
    conv = start(world, "carl", client="alex", text=f"{canary} see you").conversation.id
    drain(runner_for(world, sink))
    [mail] = sink.to(client_email(world, "alex"))
    url = path_of(mail.link())
    assert url.startswith("/l/m/")
    scanner = anonymous(world.runtime)
    scanner.headers["User-Agent"] = SCANNER_UA
    for _ in range(5):
        r = scanner.get(url)
        assert r.status_code == 200
        assert canary not in r.text and "Alex" not in r.text and "Maple" not in r.text
        assert "View message" in r.text
        assert session_cookie_name(world.runtime) not in r.headers.get("set-cookie", "")
        assert r.headers["referrer-policy"] == "strict-origin"  # never the token's path
        assert r.headers["cache-control"] == "no-store"
    for _ in range(2):
        r = scanner.head(url)
        assert r.status_code == 200
        assert session_cookie_name(world.runtime) not in r.headers.get("set-cookie", "")
    # A POST without the page's pre-auth cookie, or from another origin: refused, unused.
    bare = anonymous(world.runtime)
    assert bare.post(url, data={"pre": "x"}, headers={"Origin": ORIGIN}).status_code == 403
    forged = anonymous(world.runtime)
    page = forged.get(url)
    pre = re.search(r'name="pre" value="([^"]+)"', page.text)
    assert pre
    evil = forged.post(url, data={"pre": pre.group(1)}, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    # The person presses the button: a session for that one conversation.
    person = anonymous(world.runtime)
    status, location, cookies = press(person, url)
    assert (status, location) == (303, f"/portal/{conv}")
    assert session_cookie_name(world.runtime) in cookies
    opened = person.get(f"/api/v1/conversations/{conv}")
    assert opened.status_code == 200 and canary in opened.text
    # PA1: the link keeps working for its 24 hours (a second device, a second click).
    again = anonymous(world.runtime)
    assert press(again, url)[0] == 303


def test_pa6_link_session_reaches_only_its_conversation_and_stops_with_messaging_off(
    world: World,
):
    conv = start(world, "carl", client="alex", text="one").conversation.id
    other = start(world, "carl", client="alex", text="two").conversation.id
    token = issue(world, "alex", Purpose.PORTAL, timedelta(hours=24), conversation_id=conv)
    http = anonymous(world.runtime)
    assert press(http, f"/l/m/{token}")[0] == 303
    assert http.get(f"/api/v1/conversations/{conv}").status_code == 200
    sent = http.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "reply", "idempotency_key": uuid.uuid4().hex},
    )
    assert sent.status_code == 201, sent.text
    assert http.post(f"/api/v1/conversations/{conv}/read", json={"seq": 1}).status_code == 200
    missing = http.get("/api/v1/conversations/999999999")
    for path in (f"/api/v1/conversations/{other}", "/api/v1/conversations", "/api/v1/me"):
        r = http.get(path)
        assert (r.status_code, r.json()) == (404, missing.json()) or r.status_code == 404, path
    assert (
        http.post(
            f"/api/v1/conversations/{other}/messages",
            json={"text": "x", "idempotency_key": uuid.uuid4().hex},
        ).status_code
        == 404
    )
    with unit_of_work(world.runtime.db) as uow:
        clients.set_client_messaging(
            uow, world.actor("olivia"), world.id("alex"), messaging_enabled=False
        )
    assert http.get(f"/api/v1/conversations/{conv}").status_code == 404  # EN6, at once


def test_pa1_link_session_ends_when_the_24_hours_are_over(world: World):
    conv = start(world, "carl", client="alex", text="one").conversation.id
    t0 = datetime.now(UTC)
    with time_machine.travel(t0, tick=False) as clock:
        token = issue(world, "alex", Purpose.PORTAL, timedelta(hours=24), conversation_id=conv)
        clock.move_to(t0 + timedelta(hours=23, minutes=59))
        http = anonymous(world.runtime)
        assert press(http, f"/l/m/{token}")[0] == 303
        assert http.get(f"/api/v1/conversations/{conv}").status_code == 200
        clock.move_to(t0 + timedelta(hours=24, minutes=1))
        assert http.get(f"/api/v1/conversations/{conv}").status_code == 401


# --- PA2: instant sign-in -----------------------------------------------------------------


def test_pa2_known_and_unknown_emails_get_byte_identical_answers(world: World, sink: SmtpSink):
    http = anonymous(world.runtime)
    known = client_email(world, "alex")
    unknown = f"nobody-{uuid.uuid4().hex}@example.test"
    for path in ("/api/v1/auth/instant-sign-in", "/api/v1/auth/password-reset"):
        a = http.post(path, json={"email": known}, headers={"X-Forwarded-For": "1"})
        b = http.post(path, json={"email": unknown})
        c = http.post(path, json={"email": "not an address"})
        assert a.status_code == b.status_code == c.status_code == 202
        assert a.content == b.content == c.content
        assert dict(a.headers) == dict(b.headers)
    member = world.emails["carl"]
    assert http.post("/api/v1/auth/password-reset", json={"email": member}).content == b.content
    drain(runner_for(world, sink))
    assert len(sink.to(known)) == 1  # the sign-in link; the reset is for team members
    assert sink.to(known)[0].message["Subject"] == "Your sign-in link"
    assert sink.to(unknown) == []
    assert [r.message["Subject"] for r in sink.to(member)] == ["Reset your Confide password"]


def test_pa2_link_works_once_only_the_newest_works_and_signs_the_client_in(
    world: World, sink: SmtpSink
):
    http = anonymous(world.runtime)
    pat = client_email(world, "pat")
    for _ in range(2):
        assert http.post("/api/v1/auth/instant-sign-in", json={"email": pat}).status_code == 202
        drain(runner_for(world, sink))
    first, second = (path_of(m.link()) for m in sink.to(pat))
    assert http.get(first).status_code == 410  # only the newest works
    person = anonymous(world.runtime)
    status, location, _cookies = press(person, second)
    assert (status, location) == (303, "/portal")
    me = person.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["kind"] == "contact"
    assert person.get("/api/v1/conversations").status_code == 200  # a full portal session
    assert anonymous(world.runtime).get(second).status_code == 410  # works once


def test_pa2_link_expires_after_the_configured_minutes(world: World, sink: SmtpSink):
    http = anonymous(world.runtime)
    alex = client_email(world, "alex")
    t0 = datetime.now(UTC)
    with time_machine.travel(t0, tick=False) as clock:
        http.post("/api/v1/auth/instant-sign-in", json={"email": alex})
        drain(runner_for(world, sink))
        url = path_of(sink.to(alex)[0].link())
        clock.move_to(t0 + timedelta(minutes=10))
        assert anonymous(world.runtime).get(url).status_code == 410


def test_pa2_requests_are_rate_limited_per_ip(world: World):
    http = anonymous(world.runtime)
    ip = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    with unit_of_work(world.runtime.db) as uow:
        for _ in range(email_links.IP_LIMIT):
            email_links.request_instant_sign_in(uow, email="x@example.test", ip=ip)
    with unit_of_work(world.runtime.db) as uow, pytest.raises(email_links.RateLimited):
        email_links.request_instant_sign_in(uow, email="x@example.test", ip=ip)
    del http


def test_pa2_at_most_five_links_per_person_per_hour(world: World, sink: SmtpSink):
    alex = client_email(world, "alex")
    for i in range(8):
        with unit_of_work(world.runtime.db) as uow:
            email_links.request_instant_sign_in(uow, email=alex, ip=f"192.0.2.{i}")
    drain(runner_for(world, sink))
    assert len(sink.to(alex)) == email_links.LINKS_PER_PERSON


# --- password reset -------------------------------------------------------------------------


def test_password_reset_by_email_sets_the_password_and_ends_other_sessions(
    world: World, sink: SmtpSink
):
    carl = world.emails["carl"]
    old = anonymous(world.runtime)
    assert (
        old.post("/api/v1/auth/login", json={"email": carl, "password": PASSWORD}).status_code
        == 204
    )
    assert old.get("/api/v1/me").status_code == 200
    http = anonymous(world.runtime)
    http.post("/api/v1/auth/password-reset", json={"email": carl})
    drain(runner_for(world, sink))
    url = path_of(sink.to(carl)[0].link())
    page = http.get(url)
    pre = re.search(r'name="pre" value="([^"]+)"', page.text)
    assert pre
    mismatch = http.post(
        url,
        data={"pre": pre.group(1), "password": "a new long password", "confirm": "other"},
        headers={"Origin": ORIGIN},
    )
    assert mismatch.status_code == 422  # the link is not used up by a typo
    done = http.post(
        url,
        data={
            "pre": pre.group(1),
            "password": "a new long password",
            "confirm": "a new long password",
        },
        headers={"Origin": ORIGIN},
    )
    assert done.status_code == 200, done.text
    assert old.get("/api/v1/me").status_code == 401
    fresh = anonymous(world.runtime)
    assert (
        fresh.post(
            "/api/v1/auth/login", json={"email": carl, "password": "a new long password"}
        ).status_code
        == 204
    )
    assert anonymous(world.runtime).get(url).status_code == 410


def test_pa7_every_link_issued_and_used_is_audited_by_ids_only(world: World):
    token = issue(world, "alex", Purpose.INSTANT_SIGN_IN, timedelta(minutes=10))
    assert press(anonymous(world.runtime), f"/l/s/{token}")[0] == 303
    with unit_of_work(world.runtime.db, write=False) as uow:
        rows = uow.conn.execute(
            text("SELECT action, meta FROM audit_log WHERE chain_id = :p AND action LIKE 'link.%'"),
            {"p": world.practice_a},
        ).all()
    actions = [a for a, _m in rows]
    assert "link.issued" in actions and "link.used" in actions
    for _a, meta in rows:
        assert token not in meta and "@" not in meta


def party(world: World, name: str) -> Party:
    return world.parties[name]


def test_invitation_lets_a_new_team_member_choose_a_password(world: World, sink: SmtpSink):
    email = f"nia.{uuid.uuid4().hex[:8]}@maple.test"
    added = world.api("olivia").post(
        "/api/v1/members", json={"name": "Nia New", "email": email, "roles": ["scheduler"]}
    )
    assert added.status_code == 201, added.text
    drain(runner_for(world, sink))
    [mail] = sink.to(email)
    assert mail.message["Subject"] == "Maple Street invites you to Confide"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    url = path_of(mail.link())
    assert url.startswith("/l/i/")
    http = anonymous(world.runtime)
    page = http.get(url)
    pre = re.search(r'name="pre" value="([^"]+)"', page.text)
    assert pre
    new = "my first long password"
    done = http.post(
        url, data={"pre": pre.group(1), "password": new, "confirm": new}, headers={"Origin": ORIGIN}
    )
    assert done.status_code == 200, done.text
    login = anonymous(world.runtime).post(
        "/api/v1/auth/login", json={"email": email, "password": new}
    )
    assert login.status_code == 204
    assert anonymous(world.runtime).get(url).status_code == 410  # works once


def test_pa2_pa3_one_lookup_finds_portal_people_by_address(world: World):
    """Instant sign-in (PA2) and the first OIDC sign-in (PA3) find their person with the
    same query: clients and contacts with portal access whose client is active, across
    practices, whatever the case of the address."""
    with unit_of_work(world.runtime.db) as uow:
        people = uow.people

        def found(name: str) -> list[Party]:
            email = client_email(world, name).upper() + " "
            return [f.party for f in people.find_client_side_by_email(email)]

        assert found("alex") == [world.parties["alex"]]
        assert found("pat") == [world.parties["pat"]]
        assert people.find_client_side_by_email(client_email(world, "zoe"))[0].practice_id == (
            world.practice_b
        )
        assert found("casey") == []  # no portal access
        people.update_client(world.practice_a, world.id("jordan"), active=False)
        assert found("pat") == []  # a contact of a client no longer active
        uow.rollback()


LETTER = {
    Purpose.PORTAL: "m",
    Purpose.INSTANT_SIGN_IN: "s",
    Purpose.PASSWORD_RESET: "r",
    Purpose.INVITATION: "i",
}


@pytest.mark.parametrize("purpose", list(LETTER))
def test_pa1_pa7_landing_pages_on_the_app_layout_keep_their_guarantees(
    world: World, purpose: Purpose
):
    """The landing pages use the app's layout (base.html, app.css) and its CSP, and
    still: no session or CSRF cookie for a GET or HEAD (only the pre-auth cookie), no
    navigation, no inline style or script, the token's path in no Referer."""
    who = "carl" if purpose in (Purpose.PASSWORD_RESET, Purpose.INVITATION) else "alex"
    extra = {"conversation_id": 1} if purpose is Purpose.PORTAL else {}
    token = issue(world, who, purpose, timedelta(hours=1), **extra)
    url = f"/l/{LETTER[purpose]}/{token}"
    scanner = anonymous(world.runtime)
    for method in ("GET", "HEAD"):
        r = scanner.request(method, url)
        assert r.status_code == 200
        names = {c.split("=", 1)[0].strip() for c in r.headers.get_list("set-cookie")}
        assert names == {"__Host-confide_pre"}, names
        assert r.headers["referrer-policy"] == "strict-origin"
        csp = r.headers["content-security-policy"]
        assert "style-src 'self'" in csp and "unsafe-inline" not in csp
    page = scanner.get(url).text
    assert '<link rel="stylesheet" href="/static/app.css">' in page
    assert 'class="card narrow"' in page and "topbar" not in page
    assert "<style" not in page and "style=" not in page and "hx-headers" not in page
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None  # no inline script


def test_pa2_request_page_answers_byte_identically_for_known_and_unknown_addresses(
    world: World,
):
    """The form version of PA2, on the app's layout: no per-request token in the page."""
    http = anonymous(world.runtime)
    first, second = http.get("/l/sign-in"), http.get("/l/sign-in")
    assert first.content == second.content and "set-cookie" not in first.headers
    known = http.post(
        "/l/sign-in", data={"email": client_email(world, "alex")}, headers={"Origin": ORIGIN}
    )
    unknown = http.post(
        "/l/sign-in",
        data={"email": f"nobody-{uuid.uuid4().hex}@example.test"},
        headers={"Origin": ORIGIN},
    )
    assert known.status_code == unknown.status_code == 200
    assert known.content == unknown.content and "a sign-in link is on its way" in known.text
