"""PA3: sign-in with an OpenID Connect provider, against a local test provider with its
own RSA keys (tests/oidc_provider.py). Authorization code with PKCE, state and nonce
bound to a pre-auth cookie; id token validation; accounts linked by (issuer, subject);
the first sign-in links by verified email to a client or contact only."""

import html
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from confide.runtime import Runtime, build_runtime
from confide.store.tables import AuditRow
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests.conftest import make_settings
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider
from tests.personas import World, anonymous, build_world

API = "/api/v1"
SESSION = "__Host-confide_session"


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as p:
        yield p


@pytest.fixture(scope="module")
def oidc_runtime(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    settings = make_settings(
        tmp_path_factory.mktemp("confide-oidc"),
        oidc_issuer=provider.base,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_display_name="Test ID",
    )
    rt = build_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def oworld(oidc_runtime: Runtime) -> World:
    return build_world(oidc_runtime)


def email_of(world: World, name: str) -> str:
    with unit_of_work(world.runtime.db, write=False) as uow:
        party = world.parties[name]
        if party.kind.value == "client":
            email = uow.people.get_client(world.practice_of[name], party.id).email
        else:
            email = uow.people.get_contact(world.practice_of[name], party.id).email
    assert email
    return email


def begin(browser: TestClient) -> dict[str, str]:
    r = browser.get(f"{API}/auth/oidc/start", follow_redirects=False)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("__host-confide_oidc=")
    for attr in ("httponly", "secure", "samesite=lax", "max-age=600"):
        assert attr in cookie
    q = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
    assert q["code_challenge_method"] == "S256" and q["response_type"] == "code"
    assert q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == "https://testserver/api/v1/auth/oidc/callback"
    return q


def flow(
    world: World,
    provider: Provider,
    browser: TestClient | None = None,
    *,
    state: str | None = None,
    nonce: str | None = None,
    sign_with: str = "good",
    **claims: Any,
) -> tuple[TestClient, Any]:
    browser = browser or anonymous(world.runtime)
    q = begin(browser)
    code = provider.issue(
        q["code_challenge"],
        nonce if nonce is not None else q["nonce"],
        sign_with=sign_with,
        **claims,
    )
    r = browser.get(
        f"{API}/auth/oidc/callback",
        params={"code": code, "state": q["state"] if state is None else state},
        follow_redirects=False,
    )
    return browser, r


def reasons(world: World) -> list[str]:
    with unit_of_work(world.runtime.db, write=False) as uow:
        metas = uow.conn.execute(
            select(AuditRow.meta)
            .where(AuditRow.action == "signin.oidc_failed")
            .order_by(AuditRow.id)  # the callers slice off what was there before
        ).scalars()
        return [m for m in metas]


def refused(r: Any) -> None:
    assert r.status_code == 403, r.text
    assert r.json() == {
        "error": {
            "code": "oidc_sign_in_failed",
            "message": "That sign-in did not work. Try again, or use another way.",
        }
    }
    assert SESSION.lower() not in r.headers.get("set-cookie", "").lower()


def test_pa3_the_provider_is_announced(oworld: World):
    r = anonymous(oworld.runtime).get(f"{API}/auth/oidc/provider")
    assert r.json() == {"enabled": True, "name": "Test ID"}


def test_pa3_first_sign_in_links_a_client_by_verified_email_then_by_subject(
    oworld: World, provider: Provider
):
    sub = "alex-" + uuid.uuid4().hex
    browser, r = flow(oworld, provider, sub=sub, email=email_of(oworld, "alex"))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/portal"
    me = browser.get(f"{API}/me")
    assert me.status_code == 200 and me.json()["id"] == oworld.id("alex")
    # PKCE: the token request carried the verifier, the provider checked it.
    assert len(provider.token_requests[-1]["code_verifier"]) >= 43
    # Later sign-ins go by (issuer, subject), whatever the email says now.
    again, r2 = flow(oworld, provider, sub=sub, email="changed-" + uuid.uuid4().hex + "@x.test")
    assert r2.status_code == 303
    assert again.get(f"{API}/me").json()["id"] == oworld.id("alex")


def test_pa3_a_contact_signs_in_too(oworld: World, provider: Provider):
    browser, r = flow(oworld, provider, email=email_of(oworld, "pat"))
    assert r.status_code == 303
    assert browser.get(f"{API}/me").json() == {
        **browser.get(f"{API}/me").json(),
        "kind": "contact",
        "id": oworld.id("pat"),
    }


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong_audience", "wrong_audience"),
        ("wrong_issuer", "wrong_issuer"),
        ("expired", "expired"),
        ("bad_signature", "bad_signature"),
        ("alg_none", "algorithm_not_allowed"),
        ("nonce_mismatch", "nonce_mismatch"),
        ("state_mismatch", "state_mismatch"),
        ("unverified_email", "email_not_verified"),
        ("unknown_email", "no_match"),
        ("team_member_email", "no_match"),
    ],
)
def test_pa3_bad_id_tokens_and_requests_are_refused(
    oworld: World, provider: Provider, case: str, reason: str
):
    email = email_of(oworld, "alex")
    kw: dict[str, Any] = {"email": email}
    now = int(time.time())
    if case == "wrong_audience":
        kw["aud"] = "someone-else"
    elif case == "wrong_issuer":
        kw["iss"] = "https://evil.example"
    elif case == "expired":
        kw.update(iat=now - 3600, exp=now - 300)
    elif case == "bad_signature":
        kw["sign_with"] = "evil"
    elif case == "alg_none":
        kw["sign_with"] = "none"
    elif case == "nonce_mismatch":
        kw["nonce"] = "not-the-nonce"
    elif case == "state_mismatch":
        kw["state"] = "not-the-state"
    elif case == "unverified_email":
        kw["email_verified"] = False
    elif case == "unknown_email":
        kw["email"] = f"stranger-{uuid.uuid4().hex}@example.test"
    elif case == "team_member_email":
        kw["email"] = oworld.emails["carl"]  # members are linked only while signed in
    before = len(reasons(oworld))
    browser, r = flow(oworld, provider, **kw)
    refused(r)
    assert browser.get(f"{API}/me").status_code == 401
    new = reasons(oworld)[before:]
    assert any(f'"reason":"{reason}"' in m for m in new), new
    assert not any(email in m for m in new)  # ids and reason codes only


def test_pa3_the_callback_works_once_and_only_in_the_browser_that_started(
    oworld: World, provider: Provider
):
    browser = anonymous(oworld.runtime)
    q = begin(browser)
    code = provider.issue(q["code_challenge"], q["nonce"], email=email_of(oworld, "alex"))
    elsewhere = anonymous(oworld.runtime)  # no pre-auth cookie
    refused(elsewhere.get(f"{API}/auth/oidc/callback", params={"code": code, "state": q["state"]}))
    ok = browser.get(
        f"{API}/auth/oidc/callback",
        params={"code": code, "state": q["state"]},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    code2 = provider.issue(q["code_challenge"], q["nonce"], email=email_of(oworld, "alex"))
    replay = anonymous(oworld.runtime)
    replay.cookies.set("__Host-confide_oidc", "x" * 43, domain="testserver.local")
    refused(replay.get(f"{API}/auth/oidc/callback", params={"code": code2, "state": q["state"]}))


def test_pa3_a_client_without_portal_access_is_refused(oworld: World, provider: Provider):
    # casey: messaging off; take her portal access away too
    olivia = oworld.api("olivia")
    olivia.patch(f"{API}/clients/{oworld.id('casey')}/portal", json={"portal_access": False})
    with unit_of_work(oworld.runtime.db, write=False) as uow:
        email = uow.people.get_client(oworld.practice_a, oworld.id("casey")).email
    _browser, r = flow(oworld, provider, email=email)
    refused(r)


def test_pa3_team_members_link_their_account_where_the_practice_allows_it(
    oworld: World, provider: Provider
):
    carl = oworld.api("carl")
    no = carl.post(f"{API}/auth/oidc/link")
    assert no.status_code == 403 and no.json()["error"]["code"] == "oidc_not_allowed"
    r = oworld.api("olivia").patch(f"{API}/practice/security", json={"members_may_use_oidc": True})
    assert r.status_code == 200
    carl.cookies.clear()
    started = carl.post(f"{API}/auth/oidc/link")
    assert started.status_code == 200, started.text
    q = {k: v[0] for k, v in parse_qs(urlsplit(started.json()["authorization_url"]).query).items()}
    sub = "carl-" + uuid.uuid4().hex
    code = provider.issue(q["code_challenge"], q["nonce"], sub=sub, email="carl@gmail.test")
    linked = carl.get(
        f"{API}/auth/oidc/callback",
        params={"code": code, "state": q["state"]},
        follow_redirects=False,
    )
    assert linked.status_code == 303 and linked.headers["location"] == "/messages"
    browser, r = flow(oworld, provider, sub=sub, email="carl@gmail.test")
    assert r.status_code == 303
    assert browser.get(f"{API}/me").json()["id"] == oworld.id("carl")
    # The practice turns it off again: the linked account no longer signs in.
    oworld.api("olivia").patch(f"{API}/practice/security", json={"members_may_use_oidc": False})
    _browser, r = flow(oworld, provider, sub=sub, email="carl@gmail.test")
    refused(r)


def test_pa3_without_configuration_the_routes_do_not_exist(world: World):
    r = anonymous(world.runtime).get(f"{API}/auth/oidc/start", follow_redirects=False)
    assert r.status_code == 404
    assert anonymous(world.runtime).get(f"{API}/auth/oidc/provider").json() == {
        "enabled": False,
        "name": None,
    }


# --- the web flow: the sign-in page's button, the code step, refusals for a browser ------

PAGE = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # a browser's navigation


def test_pa3_the_sign_in_page_offers_the_provider_only_when_configured(oworld: World, world: World):
    page = anonymous(oworld.runtime).get("/signin")
    assert page.status_code == 200
    assert '<a class="button secondary wide-button" href="/api/v1/auth/oidc/start">' in page.text
    assert "Sign in with Test ID" in page.text
    plain = anonymous(world.runtime).get("/signin")
    assert "/auth/oidc/start" not in plain.text and "Sign in with" not in plain.text


def test_pa3_a_refused_sign_in_sends_a_browser_back_to_the_sign_in_page(
    oworld: World, provider: Provider
):
    browser = anonymous(oworld.runtime)
    q = begin(browser)
    code = provider.issue(q["code_challenge"], q["nonce"], aud="someone-else")
    r = browser.get(
        f"{API}/auth/oidc/callback",
        params={"code": code, "state": q["state"]},
        headers=PAGE,
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/signin?oidc=failed"
    assert SESSION.lower() not in r.headers.get("set-cookie", "").lower()
    page = browser.get(r.headers["location"])
    assert "That sign-in did not work. Try again, or use another way." in page.text
    assert "wrong_audience" not in page.text  # the reason stays in the audit row
    assert any('"reason":"wrong_audience"' in m for m in reasons(oworld))


def test_pa3_pa4_a_member_with_a_second_factor_enters_the_code_on_the_sign_in_page(
    oworld: World, provider: Provider
):
    import pyotp

    from confide.services import second_factor

    oworld.api("olivia").patch(f"{API}/practice/security", json={"members_may_use_oidc": True})
    carl = oworld.api("carl")
    started = carl.post(f"{API}/auth/oidc/link")
    q = {k: v[0] for k, v in parse_qs(urlsplit(started.json()["authorization_url"]).query).items()}
    sub = "carl-" + uuid.uuid4().hex
    code = provider.issue(q["code_challenge"], q["nonce"], sub=sub, email="carl@gmail.test")
    linked = carl.get(
        f"{API}/auth/oidc/callback", params={"code": code, "state": q["state"]}, headers=PAGE
    )
    assert linked.status_code == 200
    with unit_of_work(oworld.runtime.db) as uow:
        secret = second_factor.begin_enrollment(uow, oworld.actor("carl")).secret
    with unit_of_work(oworld.runtime.db) as uow:
        second_factor.confirm_enrollment(uow, oworld.actor("carl"), code=pyotp.TOTP(secret).now())
    browser = anonymous(oworld.runtime)
    q = begin(browser)
    code = provider.issue(q["code_challenge"], q["nonce"], sub=sub, email="carl@gmail.test")
    r = browser.get(
        f"{API}/auth/oidc/callback",
        params={"code": code, "state": q["state"]},
        headers=PAGE,
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/signin/code"
    assert SESSION.lower() not in r.headers["set-cookie"].lower()
    assert "__host-confide_signin=" in r.headers["set-cookie"].lower()
    page = browser.get("/signin/code")
    assert page.status_code == 200 and 'action="/signin/code"' in page.text
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert token
    done = browser.post(
        "/signin/code",
        data={"code": pyotp.TOTP(secret).at(time.time() + 30), "csrf_token": token.group(1)},
        headers={"Origin": "https://testserver"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/messages", done.text[:300]
    assert browser.get(f"{API}/me").json()["id"] == oworld.id("carl")
    me = browser.get(f"{API}/me")
    assert me.status_code == 200


def test_pa3_a_member_links_their_account_on_the_security_page(oworld: World, provider: Provider):
    from tests.integration.test_pages import Browser

    app = create_app(oworld.runtime)
    olivia = Browser(app, oworld, "olivia")
    page = olivia.http.get("/settings/security").text
    assert "Team members may sign in with Test ID" in page
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert token
    allowed = olivia.http.post(
        "/settings/security/practice",
        data={"csrf_token": token.group(1), "oidc_shown": "1", "members_may_use_oidc": "on"},
        follow_redirects=False,
    )
    assert allowed.status_code == 303
    carl = Browser(app, oworld, "carl")
    page = carl.http.get("/settings/security").text
    assert "Link my Test ID account" in page
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert token
    started = carl.http.post("/settings/security/oidc-link", data={"csrf_token": token.group(1)})
    assert started.status_code == 200
    assert "__host-confide_oidc=" in started.headers["set-cookie"].lower()
    m = re.search(r'<a class="button primary" href="([^"]+)">Continue to Test ID</a>', started.text)
    assert m and m.group(1).startswith(f"{provider.base}/authorize?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(html.unescape(m.group(1))).query).items()}
    sub = "carl-web-" + uuid.uuid4().hex
    code = provider.issue(q["code_challenge"], q["nonce"], sub=sub, email="carl@gmail.test")
    linked = carl.http.get(
        f"{API}/auth/oidc/callback",
        params={"code": code, "state": q["state"]},
        follow_redirects=False,
    )
    assert linked.status_code == 303 and linked.headers["location"] == "/messages"
    browser, r = flow(oworld, provider, sub=sub, email="carl@gmail.test")
    assert r.status_code == 303
    assert browser.get(f"{API}/me").json()["id"] == oworld.id("carl")
