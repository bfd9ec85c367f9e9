"""PM7 / T01 for the web pages: every HTML route × every kind of actor.

`PAGES` lists each page (GET) with the expected answer per actor; `ACTIONS` lists each
state-changing page route. `test_pm7_every_page_route_is_in_the_tables` derives the
routes from the app, so a new page without an entry fails the suite (as the API's
MATRIX does). Missing and forbidden look the same: a page about something an actor may
not see answers exactly like a page about an id that does not exist.

Also the CSRF rules of docs/security.md: every state-changing page request needs the
token bound to the session; a token of another session, or none, is refused.
"""

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import pyotp
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from confide.domain.actors import Actor, PartyKind, Via
from confide.domain.exports import ExportScope
from confide.runtime import Runtime
from confide.services import exports, notifications, push, second_factor, sessions
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from confide.web.pages.common import NOT_FOUND_TEXT
from tests.personas import PASSWORD, World, build_world, start

ORIGIN = "https://testserver"
ACTORS = ("anonymous", "carl", "betty", "owen", "alex", "pat", "zoe")
MEMBERS = ("carl", "betty", "owen")
CLIENT_SIDE = ("alex", "pat", "zoe")
MISSING = 999_999_999


def expect(ok: tuple[str, ...] = (), *, anonymous: str = "signin") -> dict[str, str]:
    out = {a: "404" for a in ACTORS}
    out["anonymous"] = anonymous
    for a in ok:
        out[a] = "ok"
    return out


HOME = {"anonymous": "→/signin", **{m: "→/messages" for m in MEMBERS}}
HOME.update({c: "→/portal" for c in CLIENT_SIDE})
PUBLIC = {a: "ok" for a in ACTORS}
SIGNIN = {"anonymous": "ok", **{a: HOME[a] for a in ACTORS if a != "anonymous"}}

CONV = "conv_client"  # carl <-> alex, started by carl
# (path template, target of its {id}) -> expected per actor; targets are keys of the
# `targets` fixture (conversation, message, people of practice A).
PAGES: dict[str, tuple[str | None, dict[str, str]]] = {
    "/": (None, HOME),
    "/signin": (None, SIGNIN),
    "/signin/code": (None, SIGNIN),  # the code step's page (after an OIDC provider, PA4)
    "/manifest.webmanifest": (None, PUBLIC),
    "/sw.js": (None, PUBLIC),
    "/messages": (None, expect(MEMBERS)),
    "/messages/list": (None, expect(MEMBERS)),
    "/messages/new": (None, expect(MEMBERS)),
    "/messages/away": (None, expect(MEMBERS)),
    "/messages/{conversation_id}": (CONV, expect(("carl",))),
    "/messages/{conversation_id}/since": (CONV, expect(("carl",))),
    "/messages/{conversation_id}/head": (CONV, expect(("carl",))),
    "/messages/{conversation_id}/older": (CONV, expect(("carl",))),
    "/portal": (None, expect(CLIENT_SIDE)),
    "/portal/list": (None, expect(CLIENT_SIDE)),
    "/portal/new": (None, expect(CLIENT_SIDE)),
    "/portal/{conversation_id}": (CONV, expect(("alex",))),
    "/portal/{conversation_id}/since": (CONV, expect(("alex",))),
    "/portal/{conversation_id}/head": (CONV, expect(("alex",))),
    "/portal/{conversation_id}/older": (CONV, expect(("alex",))),
    # The client overview: those with access to the client (carl is alex's clinician).
    "/clients": (None, expect(MEMBERS)),
    "/clients/{client_id}": ("alex", expect(("carl",))),
    # Records (TR1): transcripts follow access to the client exactly.
    "/clients/{client_id}/transcript": ("alex", expect(("carl",))),
    # Announcements (AN1): the team's page (what each sent), the portal's (received).
    "/announcements": (None, expect(MEMBERS)),
    "/portal/announcements": (None, expect(CLIENT_SIDE)),
    # Settings: every member sees them (read-only without permission); owen manages his
    # own practice, carl and betty see the team list.
    "/settings": (
        None,
        {
            **expect(),
            "carl": "→/settings/team",
            "betty": "→/settings/team",
            "owen": "→/settings/messaging",
        },
    ),
    "/settings/messaging": (None, expect(MEMBERS)),
    "/settings/team": (None, expect(MEMBERS)),
    "/settings/notifications": (None, expect(MEMBERS)),
    # One's own second factor and sessions, and the practice's sign-in settings (PA4,
    # PA5): every team member (tests/integration/test_security_pages.py).
    "/settings/security": (None, expect(MEMBERS)),
    # Data export (EX1) and the audit log (RC1): the account owner and practice
    # managers (with export_client_data for exports); other members are refused.
    "/settings/export": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
    "/settings/export/list": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
    # priya's export of practice A: owen (practice B) cannot know it.
    "/settings/export/{export_id}/download": (
        "export",
        {**expect(), "carl": "403", "betty": "403"},
    ),
    "/settings/audit": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
}

SIGN_IN = ("/signin", "/signin/code")  # before any session: their own tests

# State-changing page routes: who may use them (with a valid CSRF token). The form sent
# (`FORM`) keeps every switch on, so no row changes the state the others rely on.
ACTIONS: dict[str, tuple[str | None, dict[str, str]]] = {
    "/signin": (None, {}),  # tested on its own below
    "/signin/code": (None, {}),  # the second step (PA4): tested on its own below
    "/signout": (None, {a: "ok" for a in ACTORS if a != "anonymous"}),
    # to sally (practice A): owen of practice B cannot know her.
    "/messages/new": (None, expect(("carl", "betty"))),
    # enable alex: carl edits his own client; betty has no access to alex.
    "/messages/new/enable": (None, expect(("carl",))),
    # Searches: the term in the form body, never in the URL.
    "/messages/new/search": (None, expect(MEMBERS)),
    "/clients/search": (None, expect(MEMBERS)),
    "/messages/away": (None, expect(MEMBERS)),
    "/messages/{conversation_id}/send": (CONV, expect(("carl",))),
    "/messages/{conversation_id}/remove/{message_id}": (CONV, expect(("carl",))),
    "/portal/new": (None, expect(CLIENT_SIDE)),
    "/portal/{conversation_id}/send": (CONV, expect(("alex",))),
    "/clients/{client_id}/portal": ("alex", expect(("carl",))),
    "/clients/{client_id}/contacts": ("alex", expect(("carl",))),
    # pat is jordan's contact: betty is jordan's clinician.
    "/contacts/{contact_id}/portal": ("pat", expect(("betty",))),
    # Grants: team managers only (owen manages practice B, where alex does not exist).
    "/clients/{client_id}/access": ("alex", {**expect(), "carl": "403", "betty": "403"}),
    # Practice settings: owen changes his own practice; carl and betty may not.
    "/settings/messaging": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
    "/settings/messaging/members/{member_id}": (
        "sally",
        {**expect(), "carl": "403", "betty": "403"},
    ),
    "/settings/team": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
    # One's own email and push preferences (NT3, NT4): every team member.
    "/settings/notifications": (None, expect(MEMBERS)),
    # NT1 "name the practice": those who change practice settings.
    "/settings/notifications/practice": (
        None,
        {**expect(("owen",)), "carl": "403", "betty": "403"},
    ),
    "/settings/team/{member_id}": ("sally", {**expect(), "carl": "403", "betty": "403"}),
    # Settings > Security (PA4, PA5): nobody here has a second factor, so confirming
    # without a code is refused (422), new codes and turning off have nothing to act on
    # (409); the idle timeout is for settings editors (owen, of his own practice).
    "/settings/security/enroll": (None, expect(MEMBERS)),
    "/settings/security/confirm": (None, {**expect(), **{m: "422" for m in MEMBERS}}),
    "/settings/security/recovery-codes": (None, {**expect(), **{m: "409" for m in MEMBERS}}),
    "/settings/security/disable": (None, {**expect(), **{m: "409" for m in MEMBERS}}),
    "/settings/security/practice": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
    # PA3 for the team: no OIDC provider is configured here (test_oidc_signin.py).
    "/settings/security/oidc-link": (None, expect()),
    # Ends every session of the actor: tested on its own (test_security_pages.py).
    "/settings/security/sign-out-everywhere": (None, expect(MEMBERS)),
    # PA4 recovery: managers reset (owen cannot know sally).
    "/settings/team/{member_id}/second-factor/reset": (
        "sally",
        {**expect(), "carl": "403", "betty": "403"},
    ),
    # TR2: copy carl's message to alex into a chart note on alex's record.
    "/clients/{client_id}/chart-notes": ("alex", expect(("carl",))),
    # AN1 to all active clients: owners and practice managers (owen of practice B).
    "/announcements": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
    "/settings/export": (None, {**expect(("owen",)), "carl": "403", "betty": "403"}),
    "/settings/export/{export_id}/delete": (
        "export",
        {**expect(), "carl": "403", "betty": "403"},
    ),
}
# Actions whose success ends the actor's other sessions (the module's browsers): their
# own tests, in a world of their own.
OWN_WORLD = ("/settings/security/sign-out-everywhere",)
PARAMS = ("conversation_id", "client_id", "contact_id", "member_id", "export_id")


QUERY = {"/older": "?before=2"}  # required query parameters, by path ending


def url_of(path: str, target: str | None, targets: dict[str, int], *, missing: bool = False) -> str:
    value = MISSING if missing else (targets[target] if target else 0)
    query = next((q for end, q in QUERY.items() if path.endswith(end)), "")
    return (
        path.format(
            **{p: value for p in PARAMS},
            message_id=MISSING if missing or "conversation_id" not in path else targets["message"],
        )
        + query
    )


FORM = {
    "text": "A page reply",
    "q": "Client",  # the searches
    "on": "off",  # away off; a grant ended
    "enabled": "on",
    "portal_access": "on",
    "messaging_enabled": "on",
    "team_messaging": "on",
    "client_messaging": "on",
    "name": "Page Person",
    "roles": "scheduler",
    "active": "on",
    "email_new_messages": "on",
    "push_new_message": "on",
    "session_idle_minutes": "15",  # the default (PA5)
    "audience": "all_clients",
    "scope": "practice",
    "protect": "on",
}


def page_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route outside the JSON API (see `api_routes`: FastAPI
    >= 0.137 keeps included routers as lazy nodes)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    if flatten is None:
        pairs: Iterator[tuple[Any, str]] = ((r, r.path) for r in app.routes)
    else:
        pairs = ((c.original_route, c.path) for c in flatten(app.routes))
    found = set()
    for route, path in pairs:
        if isinstance(route, APIRoute) and not path.startswith("/api/") and path != "/healthz":
            found.update((m, path) for m in route.methods if m != "HEAD")
    return found


@pytest.fixture(scope="module")
def pages_world(runtime: Runtime) -> World:
    return build_world(runtime)


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture(scope="module")
def targets(pages_world: World) -> dict[str, int]:
    sent = start(pages_world, "carl", client="alex", text="Hello Alex")
    people = {n: pages_world.id(n) for n in ("alex", "pat", "sally", "gus")}
    with unit_of_work(pages_world.runtime.db) as uow:
        made = exports.request_export(uow, pages_world.actor("priya"), scope=ExportScope.PRACTICE)
    return {
        "conv_client": sent.conversation.id,
        "message": sent.message.id,
        "export": made.export.id,
        **people,
    }


class Browser:
    """A TestClient holding one actor's session cookie, like a browser would."""

    def __init__(self, app: FastAPI, world: World, actor: str) -> None:
        self.http = TestClient(app, base_url=ORIGIN, raise_server_exceptions=False)
        self.http.headers["Origin"] = ORIGIN
        if actor != "anonymous":
            a = world.actor(actor)
            via = Via.PASSWORD if a.party.kind is PartyKind.MEMBER else Via.MAGIC_LINK
            with unit_of_work(world.runtime.db) as uow:
                sid = sessions.start_session(uow, Actor(a.practice_id, a.party, via))
            self.http.cookies.set("__Host-confide_session", sid, domain="testserver.local")

    def token(self) -> str:
        page = self.http.get("/signin", follow_redirects=False)
        if page.status_code == 303:
            page = self.http.get(page.headers["location"], follow_redirects=False)
        m = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert m, page.text[:500]
        return m.group(1)


@pytest.fixture(scope="module")
def browsers(app: FastAPI, pages_world: World) -> Iterator[dict[str, Browser]]:
    out = {a: Browser(app, pages_world, a) for a in ACTORS}
    yield out
    for b in out.values():
        b.http.close()


def check(response, outcome: str) -> None:
    if outcome == "ok":
        assert response.status_code in (200, 204, 303), response.text[:300]
    elif outcome == "signin":
        assert response.status_code == 303, response.text[:300]
        assert response.headers["location"] == "/signin"
    elif outcome.startswith("→"):
        assert response.status_code == 303, response.text[:300]
        assert response.headers["location"] == outcome[1:]
    else:
        assert response.status_code == int(outcome), response.text[:300]


# The emailed links' landing pages and request form (a token in the path, no session)
# and the demo-only mailbox: tests/integration/test_email_links.py covers them (scanner
# GETs and HEADs, single use, purpose, expiry, identical answers).
EMAILED_LINK_ROUTES = {
    *((m, f"/l/{kind}/{{token}}") for m in ("GET", "POST") for kind in "msri"),
    ("GET", "/l/sign-in"),
    ("POST", "/l/sign-in"),
    ("GET", "/dev/mailbox"),
    ("GET", "/dev/mailbox/{name}"),
}


# Browsers' CSP violation reports (no session, no token): tests/integration/test_csp_report.py.
CSP_REPORT_ROUTES = {("POST", "/csp-report")}


def test_pm7_every_page_route_is_in_the_tables(app: FastAPI):
    expected = {("GET", p) for p in PAGES} | {("POST", p) for p in ACTIONS}
    assert page_routes(app) == expected | EMAILED_LINK_ROUTES | CSP_REPORT_ROUTES


@pytest.mark.parametrize("path", list(PAGES))
@pytest.mark.parametrize("actor", ACTORS)
def test_pm7_each_page_answers_each_actor_as_the_table_says(
    path: str, actor: str, browsers: dict[str, Browser], targets: dict[str, int]
):
    target, table = PAGES[path]
    browser = browsers[actor]
    url = url_of(path, target, targets)
    response = browser.http.get(url, follow_redirects=False)
    check(response, table[actor])
    if table[actor] == "ok" and response.headers["content-type"].startswith("text/html"):
        assert response.headers["cache-control"] == "no-store"  # health information
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    if table[actor] == "404":
        assert NOT_FOUND_TEXT in response.text
        assert "Hello Alex" not in response.text
        if target:  # PM7: the same answer as for an id that does not exist
            missing = browser.http.get(url_of(path, target, targets, missing=True))
            assert (missing.status_code, missing.text) == (404, response.text)


@pytest.mark.parametrize("path", [p for p in ACTIONS if p not in (*SIGN_IN, *OWN_WORLD)])
@pytest.mark.parametrize("actor", ACTORS)
def test_pm7_each_page_action_answers_each_actor_as_the_table_says(
    path: str,
    actor: str,
    app: FastAPI,
    pages_world: World,
    targets: dict[str, int],
):
    target, table = ACTIONS[path]
    browser = Browser(app, pages_world, actor)  # own session: signout ends it
    url = url_of(path, target, targets)
    if path.endswith("/remove/{message_id}"):
        url = url_of(path, target, targets).rsplit("/", 1)[0] + f"/{MISSING}"
    form = {"csrf_token": browser.token(), **FORM, "idempotency_key": uuid.uuid4().hex}
    form["email"] = f"page.{uuid.uuid4().hex}@birch.test"
    form["to"] = f"member:{pages_world.id('sally')}"
    form["client_id"] = str(pages_world.id("alex"))
    form["member_id"] = str(pages_world.id("gus"))
    form["message_id"] = str(targets["message"])
    response = browser.http.post(url, data=form, follow_redirects=False)
    outcome = table.get(actor, "403")
    if path.endswith("/remove/{message_id}") and outcome == "ok":
        outcome = "404"  # MISSING message: none to remove
    if actor == "anonymous":
        outcome = "403"  # no session: no session-bound CSRF token can be valid
    if path == "/portal/new" and actor == "zoe":
        outcome = "404"  # sally is of another practice
    check(response, outcome)
    if outcome == "404":
        assert NOT_FOUND_TEXT in response.text


@pytest.mark.parametrize("path", [p for p in ACTIONS if p not in SIGN_IN])
def test_csrf_state_changing_pages_refuse_a_missing_or_foreign_token(
    path: str, app: FastAPI, pages_world: World, targets: dict[str, int]
):
    carl, alex = Browser(app, pages_world, "carl"), Browser(app, pages_world, "alex")
    url = url_of(path, ACTIONS[path][0], targets)
    form = {**FORM, "text": "forged", "idempotency_key": uuid.uuid4().hex, "on": "on"}
    no_token = carl.http.post(url, data=form, follow_redirects=False)
    assert no_token.status_code == 403, no_token.text
    foreign = carl.http.post(url, data={**form, "csrf_token": alex.token()}, follow_redirects=False)
    assert foreign.status_code == 403, foreign.text
    header = carl.http.post(
        url, data=form, headers={"X-CSRF-Token": "0" * 64}, follow_redirects=False
    )
    assert header.status_code == 403, header.text
    assert "forged" not in carl.http.get(f"/messages/{targets['conv_client']}").text


def test_csrf_sign_in_form_needs_its_pre_session_token(app: FastAPI, pages_world: World):
    browser = Browser(app, pages_world, "anonymous")
    form = {"email": pages_world.emails["carl"], "password": "correct horse battery staple"}
    refused = browser.http.post("/signin", data=form, follow_redirects=False)
    assert refused.status_code == 403
    token = browser.token()  # sets the pre-session cookie
    ok = browser.http.post("/signin", data={**form, "csrf_token": token}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/messages", ok.text
    assert "__Host-confide_session" in ok.headers["set-cookie"]


def test_csrf_cross_origin_post_is_refused_even_with_a_token(app: FastAPI, pages_world: World):
    carl = Browser(app, pages_world, "carl")
    token = carl.token()
    r = carl.http.post(
        "/messages/away",
        data={"csrf_token": token, "on": "on"},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403


def test_ms4_page_shows_hostile_text_escaped(
    app: FastAPI, pages_world: World, browsers: dict[str, Browser]
):
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)> javascript:alert(3)"
    sent = start(pages_world, "carl", client="alex", text=hostile)
    html = browsers["carl"].http.get(f"/messages/{sent.conversation.id}").text
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript' not in html


def test_ms7_live_fetch_from_a_hidden_tab_does_not_read(
    pages_world: World, browsers: dict[str, Browser]
):
    sent = start(pages_world, "alex", members=("carl",), text="Unread until Carl looks")
    conv, carl = sent.conversation.id, browsers["carl"].http

    def unread() -> int:
        items = carl.get("/messages/list").text
        m = re.search(rf'href="/messages/{conv}".*?aria-label="(\d+) unread"', items, re.S)
        return int(m.group(1)) if m else 0

    assert unread() == 1
    hidden = carl.get(f"/messages/{conv}/since", params={"after": 0, "read": "false"})
    assert "Unread until Carl looks" in hidden.text
    assert unread() == 1  # shown in a hidden tab: still unread
    carl.get(f"/messages/{conv}/since", params={"after": 0})
    assert unread() == 0  # looked at: read (MS7)


def _csrf_of(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert m, page[:500]
    return m.group(1)


def test_pa4_page_sign_in_asks_for_the_code_then_signs_in(app: FastAPI, world: World):
    carl = world.actor("carl")
    with unit_of_work(world.runtime.db) as uow:
        secret = second_factor.begin_enrollment(uow, carl).secret
    with unit_of_work(world.runtime.db) as uow:
        second_factor.confirm_enrollment(uow, carl, code=pyotp.TOTP(secret).now())
    browser = Browser(app, world, "anonymous")
    form = {"email": world.emails["carl"], "password": PASSWORD, "csrf_token": browser.token()}
    step = browser.http.post("/signin", data=form, follow_redirects=False)
    assert step.status_code == 200 and 'action="/signin/code"' in step.text
    assert "__Host-confide_session" not in step.headers.get("set-cookie", "")
    # The pending step opens nothing else.
    assert browser.http.get("/messages", follow_redirects=False).headers["location"] == "/signin"
    wrong = browser.http.post(
        "/signin/code",
        data={"code": "000000", "csrf_token": _csrf_of(step.text)},
        follow_redirects=False,
    )
    assert wrong.status_code == 400 and 'action="/signin/code"' in wrong.text
    ok = browser.http.post(
        "/signin/code",
        data={
            "code": pyotp.TOTP(secret).at(time.time() + 30),  # the next step: not a replay
            "csrf_token": _csrf_of(wrong.text),
        },
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/messages", ok.text[:300]
    assert "__Host-confide_session" in ok.headers["set-cookie"]
    assert browser.http.get("/messages").status_code == 200


def test_pa4_page_second_step_without_its_cookie_starts_again(app: FastAPI, world: World):
    browser = Browser(app, world, "anonymous")
    r = browser.http.post(
        "/signin/code",
        data={"code": "123456", "csrf_token": browser.token()},
        follow_redirects=False,
    )
    assert r.status_code == 400 and "timed out" in r.text
    assert "__Host-confide_session" not in r.headers.get("set-cookie", "")


def test_nt3_nt4_notification_settings_page_saves_ones_own_preferences(app: FastAPI, world: World):
    carl = Browser(app, world, "carl")
    page = carl.http.get("/settings/notifications")
    assert page.status_code == 200
    assert 'name="email_new_messages" value="on" checked' in page.text
    assert 'name="push_new_message" value="on" checked' in page.text
    assert 'name="name_practice"' not in page.text  # a basic clinician: not his to change
    r = carl.http.post(
        "/settings/notifications",
        data={"csrf_token": _csrf_of(page.text)},  # both boxes unticked
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/settings/notifications?saved=1"
    with unit_of_work(world.runtime.db, write=False) as uow:
        assert notifications.get_email_preference(uow, world.actor("carl")) is False
        assert push.get_preferences(uow, world.actor("carl"))["new_message"] is False
        # Another member's preferences are their own.
        assert notifications.get_email_preference(uow, world.actor("betty")) is True


def test_nt1_name_the_practice_from_the_settings_page(app: FastAPI, world: World):
    olivia = Browser(app, world, "olivia")
    page = olivia.http.get("/settings/notifications")
    assert 'name="name_practice"' in page.text
    r = olivia.http.post(
        "/settings/notifications/practice",
        data={"csrf_token": _csrf_of(page.text), "name_practice": "on"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with unit_of_work(world.runtime.db, write=False) as uow:
        settings = notifications.get_practice_settings(uow, world.actor("olivia"))
    assert settings.name_practice is True
