"""Settings > Security and the second-factor reset on Settings > Team (PA4, PA5), as a
browser uses them: set up a second factor from the QR code or the key as text, the
recovery codes shown once, new codes and turning it off with the password and a code,
sign out everywhere (API tokens too), the practice's requirement and idle timeout, and
the account owner's or a practice manager's reset for a member who lost everything.
The pages call the API's services: these tests check the pages' side of them."""

import html
import re

import pyotp
from fastapi import FastAPI
from sqlalchemy import select

from confide.store.tables import AuditRow
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests.integration.test_pages import Browser, _csrf_of
from tests.integration.test_signin_api import Clock, clock  # noqa: F401
from tests.personas import PASSWORD, World

SESSION = "__Host-confide_session"


def app_of(world: World) -> FastAPI:
    return create_app(world.runtime)


def post(browser: Browser, url: str, page_or_token: str, **form: str):
    """A form POST with the CSRF token of a page (or the token itself)."""
    token = page_or_token
    if not re.fullmatch(r"[0-9a-f]+", token):
        token = _csrf_of(page_or_token)
    data = {"csrf_token": token, **form}
    return browser.http.post(url, data=data, follow_redirects=False)


def secret_on(page: str) -> str:
    m = re.search(r'<code class="secret" id="totp-secret">([A-Z2-7 ]+)</code>', page)
    assert m, page[:2000]
    return m.group(1).replace(" ", "")


def recovery_codes_on(page: str) -> list[str]:
    return re.findall(r"<li><code>([a-z2-9-]{23})</code></li>", page)


def audit_actions(world: World) -> list[str]:
    with unit_of_work(world.runtime.db, write=False) as uow:
        return list(
            uow.conn.execute(
                select(AuditRow.action)
                .where(AuditRow.chain_id == world.practice_a)
                .order_by(AuditRow.seq)
            ).scalars()
        )


def enroll_on_page(browser: Browser, clock: Clock) -> tuple[str, list[str]]:  # noqa: F811
    """Set up a second factor through the page; returns (secret, recovery codes)."""
    page = browser.http.get("/settings/security").text
    assert "Set up a second factor" in page
    assert post(browser, "/settings/security/enroll", page).status_code == 303
    page = browser.http.get("/settings/security").text
    secret = secret_on(page)
    done = post(browser, "/settings/security/confirm", page, code=pyotp.TOTP(secret).at(clock.now))
    assert done.status_code == 200, done.text[:500]
    return secret, recovery_codes_on(done.text)


def test_pa4_security_page_sets_up_a_second_factor_with_a_qr_code_and_recovery_codes(
    world: World,
    clock: Clock,  # noqa: F811
):
    carl = Browser(app_of(world), world, "carl")
    page = carl.http.get("/settings/security")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "Off." in page.text and "<svg" not in page.text
    assert post(carl, "/settings/security/enroll", page.text).status_code == 303
    page = carl.http.get("/settings/security")
    # The QR code is inline SVG (no style attribute, no script: the CSP holds), with the
    # key as text for typing by hand; the page asks for a code.
    assert '<div class="qr" role="img"' in page.text and "<svg" in page.text
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    assert "style=" not in svg and "<script" not in svg
    secret = secret_on(page.text)
    assert len(secret) == 32
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    # A wrong code: the same key again, a clear message, nothing turned on.
    wrong = post(carl, "/settings/security/confirm", page.text, code="000000")
    assert wrong.status_code == 422 and "That code is not correct" in wrong.text
    assert secret_on(wrong.text) == secret
    # A reload shows the same, unconfirmed key (not a new one).
    assert secret_on(carl.http.get("/settings/security").text) == secret
    done = post(
        carl, "/settings/security/confirm", wrong.text, code=pyotp.TOTP(secret).at(clock.now)
    )
    assert done.status_code == 200 and "Your recovery codes" in done.text
    codes = recovery_codes_on(done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    # Shown once: the page now says "On" and shows neither the key nor the codes.
    after = carl.http.get("/settings/security").text
    assert "<strong>On.</strong>" in after and "Recovery codes left: 10 of 10" in after
    assert secret not in after and "totp-secret" not in after
    assert not any(c in after for c in codes)
    assert "second_factor.enabled" in audit_actions(world)
    # The next sign-in asks for the code, and a recovery code works once.
    browser = Browser(app_of(world), world, "anonymous")
    form = {"email": world.emails["carl"], "password": PASSWORD, "csrf_token": browser.token()}
    step = browser.http.post("/signin", data=form, follow_redirects=False)
    assert step.status_code == 200 and 'action="/signin/code"' in step.text
    ok = browser.http.post(
        "/signin/code",
        data={"code": codes[0].upper(), "csrf_token": _csrf_of(step.text)},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/messages"


def test_pa4_new_recovery_codes_and_turning_off_need_the_password_and_a_code(
    world: World,
    clock: Clock,  # noqa: F811
):
    carl = Browser(app_of(world), world, "carl")
    secret, old_codes = enroll_on_page(carl, clock)
    page = carl.http.get("/settings/security").text
    clock.step()
    refused = post(
        carl,
        "/settings/security/recovery-codes",
        page,
        password="not the password",
        code=pyotp.TOTP(secret).at(clock.now),
    )
    assert refused.status_code == 403
    assert "The password or the code is not correct." in html.unescape(refused.text)
    clock.step()
    new = post(
        carl,
        "/settings/security/recovery-codes",
        page,
        password=PASSWORD,
        code=pyotp.TOTP(secret).at(clock.now),
    )
    assert new.status_code == 200
    new_codes = recovery_codes_on(new.text)
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    clock.step()
    off = post(
        carl,
        "/settings/security/disable",
        page,
        password=PASSWORD,
        code=pyotp.TOTP(secret).at(clock.now),
    )
    assert off.status_code == 303 and off.headers["location"] == "/settings/security?saved=off"
    page = carl.http.get(off.headers["location"]).text
    assert "Your second factor is turned off." in page and "Set up a second factor" in page
    actions = audit_actions(world)
    assert "second_factor.recovery_codes_replaced" in actions
    assert "second_factor.disabled" in actions


def test_pa4_practice_requirement_sends_a_member_to_the_security_page_first(
    world: World,
    clock: Clock,  # noqa: F811
):
    app = app_of(world)
    olivia = Browser(app, world, "olivia")
    page = olivia.http.get("/settings/security").text
    # The account owner must have a second factor before requiring one.
    first = post(
        olivia,
        "/settings/security/practice",
        page,
        require_shown="1",
        require_second_factor="on",
        session_idle_minutes="15",
    )
    assert first.status_code == 403 and "Set up your own second factor" in first.text
    enroll_on_page(olivia, clock)
    page = olivia.http.get("/settings/security").text
    on = post(
        olivia,
        "/settings/security/practice",
        page,
        require_shown="1",
        require_second_factor="on",
        session_idle_minutes="20",
    )
    assert on.status_code == 303
    page = olivia.http.get("/settings/security").text
    assert 'name="require_second_factor" value="on" checked' in page
    assert 'value="20"' in page
    # carl has none: every page sends him to Security, where he can set it up.
    carl = Browser(app, world, "carl")
    assert carl.http.get("/messages", follow_redirects=False).headers["location"] == (
        "/settings/security"
    )
    page = carl.http.get("/settings/security")
    assert page.status_code == 200 and "Your practice requires a second factor." in page.text
    assert "For the whole practice" not in page.text
    enroll_on_page(carl, clock)
    assert carl.http.get("/messages", follow_redirects=False).status_code == 200
    # Only the account owner changes the requirement; carl may not change the timeout.
    refused = post(carl, "/settings/security/practice", page.text, session_idle_minutes="30")
    assert refused.status_code == 403


def test_pa5_idle_timeout_on_the_security_page_is_5_to_60_minutes(world: World):
    erin = Browser(app_of(world), world, "erin")  # entire practice: practice settings
    page = erin.http.get("/settings/security").text
    assert 'id="idle"' in page and "Require a second factor" not in page  # not the owner
    for bad in ("4", "61", "x"):
        r = post(erin, "/settings/security/practice", page, session_idle_minutes=bad)
        assert r.status_code == 422 and "The idle timeout is 5 to 60 minutes." in r.text
    ok = post(erin, "/settings/security/practice", page, session_idle_minutes="5")
    assert ok.status_code == 303
    assert 'value="5"' in erin.http.get("/settings/security").text


def test_pa5_sign_out_everywhere_page_ends_every_session_and_api_token(world: World):
    app = app_of(world)
    carl, phone = Browser(app, world, "carl"), Browser(app, world, "carl")
    script = world.signed_in("carl")  # a personal API token
    fiona = Browser(app, world, "fiona")
    page = carl.http.get("/settings/security").text
    assert "Sign out everywhere" in page
    done = post(carl, "/settings/security/sign-out-everywhere", page)
    assert done.status_code == 303 and done.headers["location"] == "/signin"
    assert SESSION in done.headers["set-cookie"]  # the cookie is deleted
    assert done.headers["clear-site-data"] == '"cache", "storage"'
    for browser in (carl, phone):
        assert browser.http.get("/messages", follow_redirects=False).headers["location"] == (
            "/signin"
        )
    assert script.get("/api/v1/me").status_code == 401
    assert fiona.http.get("/messages", follow_redirects=False).status_code == 200
    # Clients have no Settings: the route does not exist for them.
    alex = Browser(app, world, "alex")
    r = alex.http.post("/settings/security/sign-out-everywhere", data={"csrf_token": alex.token()})
    assert r.status_code == 404


def test_pa4_account_owner_resets_the_second_factor_of_a_member_who_lost_everything(
    world: World,
    clock: Clock,  # noqa: F811
):
    app = app_of(world)
    carl = Browser(app, world, "carl")
    enroll_on_page(carl, clock)
    olivia = Browser(app, world, "olivia")
    enroll_on_page(olivia, clock)
    page = olivia.http.get("/settings/security").text
    post(
        olivia,
        "/settings/security/practice",
        page,
        require_shown="1",
        require_second_factor="on",
        session_idle_minutes="15",
    )
    team = olivia.http.get("/settings/team").text
    carl_id = world.id("carl")
    assert f'action="/settings/team/{carl_id}/second-factor/reset"' in team
    assert "Second factor on" in team
    # A clinician may not reset; the owner may, and carl's sessions end at once.
    fiona = Browser(app, world, "fiona")
    refused = post(fiona, f"/settings/team/{carl_id}/second-factor/reset", fiona.token())
    assert refused.status_code == 403
    assert carl.http.get("/messages", follow_redirects=False).status_code == 200
    done = post(olivia, f"/settings/team/{carl_id}/second-factor/reset", team)
    assert done.status_code == 303 and done.headers["location"] == "/settings/team?saved=1"
    assert carl.http.get("/messages", follow_redirects=False).headers["location"] == "/signin"
    assert "second_factor.reset" in audit_actions(world)
    # carl signs in with the password alone, then must enroll again (PA4).
    browser = Browser(app, world, "anonymous")
    form = {"email": world.emails["carl"], "password": PASSWORD, "csrf_token": browser.token()}
    signed = browser.http.post("/signin", data=form, follow_redirects=False)
    assert signed.status_code == 303
    assert browser.http.get("/messages", follow_redirects=False).headers["location"] == (
        "/settings/security"
    )
    assert "Set up a second factor" in browser.http.get("/settings/security").text
    # No second factor left: a second reset has nothing to do.
    again = post(olivia, f"/settings/team/{carl_id}/second-factor/reset", team)
    assert again.status_code == 409


def test_pa4_practice_managers_reset_anyone_but_the_account_owner(
    world: World,
    clock: Clock,  # noqa: F811
):
    app = app_of(world)
    for name in ("olivia", "carl"):
        enroll_on_page(Browser(app, world, name), clock)
    priya = Browser(app, world, "priya")
    team = priya.http.get("/settings/team").text
    olivia_id, carl_id = world.id("olivia"), world.id("carl")
    assert f"/settings/team/{olivia_id}/second-factor/reset" not in team
    owner = post(priya, f"/settings/team/{olivia_id}/second-factor/reset", team)
    assert owner.status_code == 403
    assert post(priya, f"/settings/team/{carl_id}/second-factor/reset", team).status_code == 303
    # Nobody resets their own this way (their own page needs the password and a code).
    olivia = Browser(app, world, "olivia")
    own = post(olivia, f"/settings/team/{olivia_id}/second-factor/reset", olivia.token())
    assert own.status_code == 403
    # The API route calls the same service: the other practice's owner cannot know carl.
    assert (
        world.api("owen").post(f"/api/v1/members/{carl_id}/second-factor/reset").status_code == 404
    )


def test_pa5_after_the_session_ended_the_sign_in_page_clears_site_data_and_signs_in_again(
    world: World,
):
    """Where the page goes when its session timed out (PA5, T15): Clear-Site-Data for
    the site's storage and caches, the dead cookie deleted, and a sign-in form whose
    token is the pre-session one (the dead cookie, still sent, does not spoil it)."""
    app = app_of(world)
    carl = Browser(app, world, "carl")
    page = carl.http.get("/settings/security").text
    post(carl, "/settings/security/sign-out-everywhere", page)
    dead = carl.http.cookies.get(SESSION)
    carl.http.cookies.set(SESSION, "x" * 43 if dead is None else dead, domain="testserver.local")
    signin = carl.http.get("/signin")
    assert signin.status_code == 200
    assert signin.headers["clear-site-data"] == '"cache", "storage"'
    assert f'{SESSION}=""' in signin.headers["set-cookie"]
    carl.http.cookies.set(SESSION, "x" * 43, domain="testserver.local")  # still sent
    form = {
        "email": world.emails["carl"],
        "password": PASSWORD,
        "csrf_token": _csrf_of(signin.text),
    }
    again = carl.http.post("/signin", data=form, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/messages", again.text[:300]
    # A page of an ended session redirects to sign-in with the same header.
    old = Browser(app, world, "fiona")
    old.http.cookies.set(SESSION, "y" * 43, domain="testserver.local")
    r = old.http.get("/messages", follow_redirects=False)
    assert r.headers["location"] == "/signin"
    assert r.headers["clear-site-data"] == '"cache", "storage"'
    # A visitor who never signed in is not sent it.
    assert "clear-site-data" not in Browser(app, world, "anonymous").http.get("/signin").headers
