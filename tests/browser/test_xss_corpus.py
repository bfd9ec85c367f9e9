"""T16 / issue 8: the stored-XSS corpus (tests/browser/xss_payloads.txt, 390 payloads)
in every field a person types that the app shows, rendered in Chromium in every view.

Its own `confide serve --demo` (a practice of its own, so the other browser tests keep
their demo data). Every payload goes, through the real services and the same database,
into each field:

- message text: in team conversations and in client conversations (sent by both sides);
- member names, and the same members' away texts (each payload member is away, so the
  away banner of every team conversation shows them);
- client names (half Carl's, half Quinn's clients) and contact names (one client with
  every payload as a contact);
- announcement text (JSON only: no page shows announcements yet);
- Carl's own away text (the away page), in 600-character slices;
- search terms typed in the two search boxes, whose "nothing found for …" echoes them
  (a sample of every 8th payload).

Each view is loaded (team app, portal, settings, client pages, JSON answers opened as
documents) and must show **no run payload** (`__xss(n)` is an exposed function, alerts
and confirms are dialogs), **no CSP violation** (a `securitypolicyviolation` listener in
every page, and the server log of `POST /csp-report`), **no dangerous markup** in the DOM
(no `on*` or `hx-on` attribute, no `javascript:`/`vbscript:`/`data:` URL in an href, src,
action …, no script but ours, no iframe/object/embed/base/meta refresh), and **every
payload it should show, as text** (so the check cannot pass on an empty page).
`test_the_checks_can_fail` proves each detector fires on a real violation.
"""

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from confide.config import Settings
from confide.demo import DEMO_PASSWORD
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.announcements import Audience
from confide.domain.entities import AccessLevel, Role
from confide.domain.text import prepare_away_text, prepare_message_text, prepare_name
from confide.runtime import Runtime, build_runtime
from confide.services import announcements, clients, messaging, team
from confide.store.uow import unit_of_work
from tests.browser.conftest import DESKTOP, Demo, serve, sign_in
from tests.integration.test_serve import free_port

pytestmark = pytest.mark.browser

CORPUS = Path(__file__).parent / "xss_payloads.txt"
_CHAR = re.compile(r"\\u\{([0-9A-Fa-f]{1,6})\}")
# Whitespace as both sides see it (JS `\s` also counts U+FEFF; Python's does not).
_WS = "[ \t\n\r\f\v\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+"
TEAM_SIZE = 19  # a team conversation: Carl and up to 19 more (MAX_RECIPIENTS = 20)
CLIENT_BATCH = 49  # a thread page shows the newest 50 messages
SEARCH_SAMPLE = 8  # every 8th payload typed into each search box


def load_corpus() -> list[str]:
    """The payloads, numbered from 1 (`{n}`), with `\\u{HEX}` characters decoded."""
    out = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("## "):
            continue
        text = _CHAR.sub(lambda m: chr(int(m.group(1), 16)), line)
        out.append(text.replace("{n}", str(len(out) + 1)))
    return out


PAYLOADS = load_corpus()
WITH_BEACON = sum("__xss(" in p for p in PAYLOADS)  # the others call alert or confirm


def norm(text: str) -> str:
    return re.sub(_WS, " ", text).strip()


@dataclass
class View:
    who: str  # an email (team member) or a client's name (portal session)
    url: str
    texts: list[str] = field(default_factory=list)  # must appear as text, normalised
    json: int = 0  # a JSON answer opened as a document: how many payloads it holds


@dataclass
class Seeded:
    demo: Demo
    views: list[View]
    carl_actor: Actor
    search_terms: list[str]


def _member(demo: Demo, email: str) -> Actor:
    return Actor(demo.practice_id, Party.member(demo.member_id(email)), Via.PASSWORD)


def _seed(demo: Demo) -> Seeded:
    runtime = demo.runtime
    db = runtime.db
    owner = _member(demo, "olivia@maple.test")
    carl = _member(demo, "carl@maple.test")
    # A second clinician who supervises nobody (Sam, a supervisor, would also see Carl's).
    with unit_of_work(db) as uow:
        quinn_id = team.add_member(
            uow,
            owner,
            runtime.passwords,
            name="Quinn Quill",
            email="quinn@maple.test",
            roles=[Role.CLINICIAN],
            access_level=AccessLevel.BASIC,
            password=DEMO_PASSWORD,
        ).id
    quinn = Actor(demo.practice_id, Party.member(quinn_id), Via.PASSWORD)
    alex_id = demo.client_id("Alex Rivera")
    alex = Actor(demo.practice_id, Party(PartyKind.CLIENT, alex_id), Via.MAGIC_LINK)
    key = lambda: f"xss-{uuid.uuid4().hex}"  # noqa: E731
    views: list[View] = []

    # Members named with payloads, away with the same payload as away text.
    member_ids: list[int] = []
    for i, p in enumerate(PAYLOADS):
        with unit_of_work(db) as uow:
            m = team.add_member(
                uow,
                owner,
                runtime.passwords,
                name=p,
                email=f"xss{i}@maple.test",
                roles=[Role.SCHEDULER],
            )
        with unit_of_work(db) as uow:
            team.set_away(
                uow, Actor(demo.practice_id, Party.member(m.id), Via.PASSWORD), on=True, text=p
            )
        member_ids.append(m.id)
    names = [prepare_name(p) for p in PAYLOADS]
    aways = [prepare_away_text(p) for p in PAYLOADS]
    texts = [prepare_message_text(p) for p in PAYLOADS]

    # Team conversations: Carl and 19 payload members; each member sends its payload.
    for start in range(0, len(PAYLOADS), TEAM_SIZE):
        chunk = range(start, min(start + TEAM_SIZE, len(PAYLOADS)))
        with unit_of_work(db) as uow:
            conv = messaging.start_conversation(
                uow,
                carl,
                messaging.StartConversation(
                    member_ids=tuple(member_ids[i] for i in chunk),
                    text=f"Team batch {start}",
                    idempotency_key=key(),
                ),
            ).conversation.id
        for i in chunk:
            sender = Actor(demo.practice_id, Party.member(member_ids[i]), Via.PASSWORD)
            with unit_of_work(db) as uow:
                messaging.send_message(uow, sender, messaging.SendMessage(conv, PAYLOADS[i], key()))
        expected = [names[i] for i in chunk] + [aways[i] for i in chunk] + [texts[i] for i in chunk]
        views.append(View("carl@maple.test", f"/messages/{conv}", expected))

    # Client conversations, Carl and Alex taking turns.
    for start in range(0, len(PAYLOADS), CLIENT_BATCH):
        chunk = range(start, min(start + CLIENT_BATCH, len(PAYLOADS)))
        with unit_of_work(db) as uow:
            conv = messaging.start_conversation(
                uow,
                carl,
                messaging.StartConversation(
                    member_ids=(), client_id=alex_id, text=PAYLOADS[start], idempotency_key=key()
                ),
            ).conversation.id
        for i in chunk[1:]:
            with unit_of_work(db) as uow:
                messaging.send_message(
                    uow, alex if i % 2 else carl, messaging.SendMessage(conv, PAYLOADS[i], key())
                )
        expected = [texts[i] for i in chunk]
        views.append(View("carl@maple.test", f"/messages/{conv}", expected))
        views.append(View("Alex Rivera", f"/portal/{conv}", expected))

    # Clients named with payloads (Carl's and Quinn's: each list stays under its 200).
    client_ids: list[int] = []
    for i, p in enumerate(PAYLOADS):
        with unit_of_work(db) as uow:
            c = clients.create_client(
                uow,
                owner,
                name=p,
                email=None,
                primary_clinician_id=(carl if i % 2 == 0 else quinn).party.id,
            )
        client_ids.append(c.id)
    views.append(View("carl@maple.test", "/clients", names[0::2]))
    views.append(View("quinn@maple.test", "/clients", names[1::2]))
    for i in range(0, len(PAYLOADS), 40):  # one client's own pages, a sample
        who = "carl@maple.test" if i % 2 == 0 else "quinn@maple.test"
        views.append(View(who, f"/clients/{client_ids[i]}", [names[i]]))
        views.append(View(who, f"/messages/new?to=client:{client_ids[i]}", [names[i]]))
        views.append(View(who, f"/messages/new?to=member:{member_ids[i]}", [names[i]]))

    # One client with every payload as a contact.
    with unit_of_work(db) as uow:
        holder = clients.create_client(
            uow, owner, name="Harbor Holder", email=None, primary_clinician_id=carl.party.id
        ).id
    for p in PAYLOADS:
        with unit_of_work(db) as uow:
            clients.add_contact(
                uow,
                owner,
                holder,
                name=p,
                email=None,
                relationship="Parent",
                portal_access=False,
                messaging_enabled=False,
            )
    views.append(View("carl@maple.test", f"/clients/{holder}", names))

    # Announcements to all clients, 40 payloads each (JSON only).
    for start in range(0, len(PAYLOADS), 40):
        with unit_of_work(db) as uow:
            announcements.send_announcement(
                uow,
                owner,
                audience=Audience.ALL_CLIENTS,
                text="\n".join(PAYLOADS[start : start + 40]),
            )
    views.append(View("Alex Rivera", "/api/v1/announcements?limit=100", json=WITH_BEACON))
    # The transcript's first page (200 messages; the API pages on by cursor).
    views.append(
        View("carl@maple.test", f"/api/v1/clients/{alex_id}/transcript?limit=200", json=190)
    )

    # Lists, pickers and settings that show the names above.
    views += [
        View("carl@maple.test", "/messages"),
        View("carl@maple.test", "/messages/new"),
        View("Alex Rivera", "/portal"),
        View("Alex Rivera", "/portal/new"),  # the primary clinician only (PM4)
        View("olivia@maple.test", "/settings/team", names),
        View("olivia@maple.test", "/settings/messaging"),
        View("olivia@maple.test", "/settings/notifications"),
        View("olivia@maple.test", "/clients"),
    ]
    return Seeded(demo, views, carl, PAYLOADS[::SEARCH_SAMPLE])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    data_dir = tmp_path_factory.mktemp("xss-demo")
    port = free_port()
    proc = serve(data_dir, port)
    settings = Settings(data_dir=data_dir, demo=True, secure_cookies=False)  # type: ignore[call-arg]
    runtime: Runtime = build_runtime(settings, run_migrations=False)
    try:
        t0 = time.monotonic()
        world = _seed(Demo(f"http://127.0.0.1:{port}", data_dir, runtime))
        print(f"\nT16: seeded in {time.monotonic() - t0:.0f}s")
        yield world
    finally:
        runtime.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except Exception:
            proc.kill()
            proc.wait()


# --- the detectors ----------------------------------------------------------------------

WATCH_SCRIPT = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspSeen(e.effectiveDirective, e.blockedURI.slice(0, 40));
});
"""

DOM_CHECK = r"""
() => {
  const bad = [];
  const urlAttrs = new Set(['href', 'src', 'action', 'formaction', 'xlink:href', 'data',
    'poster', 'background', 'srcdoc', 'srcset', 'ping', 'codebase', 'cite', 'manifest',
    'dynsrc', 'lowsrc', 'hx-get', 'hx-post', 'hx-put', 'hx-delete', 'hx-patch']);
  const forbidden = new Set(['iframe', 'frame', 'frameset', 'object', 'embed', 'applet',
    'base', 'portal']);
  for (const el of document.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    if (forbidden.has(tag)) bad.push(`<${tag}>`);
    if (tag === 'meta' && el.hasAttribute('http-equiv')) bad.push('<meta http-equiv>');
    if (tag === 'script' && !/^\/static\//.test(el.getAttribute('src') || '')) bad.push('<script>');
    for (const a of el.attributes) {
      const name = a.name.toLowerCase();
      if (name.startsWith('on') || /^(data-)?hx-on/.test(name)) bad.push(`${tag}[${name}]`);
      if (urlAttrs.has(name)) {
        const v = a.value.toLowerCase()
          .replace(/[\s\u0000-\u001f\u200b-\u200d\u2028\u2029\ufeff]/g, '');
        if (/^(javascript|vbscript|data|livescript):/.test(v)) {
          bad.push(`${tag}[${name}=${v.slice(0, 30)}]`);
        }
      }
    }
  }
  return bad;
}
"""

TEXT = "() => document.body ? document.body.textContent : ''"


class Detectors:
    def __init__(self) -> None:
        self.fired: list[tuple[str, Any]] = []
        self.dialogs: list[tuple[str, str]] = []
        self.csp: list[tuple[str, str, str]] = []
        self.dom: list[tuple[str, list[str]]] = []
        self.missing: list[tuple[str, list[str]]] = []
        self.where = ""

    def attach(self, context: Any) -> None:
        context.expose_function("__xss", lambda n=None: self.fired.append((self.where, n)))
        context.expose_function(
            "__cspSeen", lambda d, b: self.csp.append((self.where, str(d), str(b)))
        )
        context.add_init_script(WATCH_SCRIPT)

    def watch(self, page: Any) -> None:
        page.on("dialog", lambda d: (self.dialogs.append((self.where, d.message)), d.dismiss()))

    def check_dom(self, page: Any, texts: list[str] = ()) -> None:  # type: ignore[assignment]
        bad = page.evaluate(DOM_CHECK)
        if bad:
            self.dom.append((self.where, bad[:10]))
        if texts:
            shown = norm(page.evaluate(TEXT))
            absent = [t for t in texts if norm(t) not in shown]
            if absent:
                self.missing.append((self.where, absent[:5]))


def open_as(browser: Any, demo: Demo, det: Detectors, who: str) -> tuple[Any, Any]:
    ctx = browser.new_context(viewport=DESKTOP, base_url=demo.base)
    det.attach(ctx)
    page = ctx.new_page()
    det.watch(page)
    if "@" in who:
        sign_in(page, who)
    else:
        ctx.add_cookies(
            [{"name": "confide_session", "value": demo.client_session(who), "url": demo.base}]
        )
    return ctx, page


def csp_log_lines(demo: Demo) -> list[str]:
    log = (demo.data_dir / "serve.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "csp violation" in line]


def test_t16_stored_xss_corpus_runs_nowhere(browser: Any, seeded: Seeded):
    demo = seeded.demo
    det = Detectors()
    started = time.monotonic()
    assert len(PAYLOADS) >= 300
    pages: dict[str, tuple[Any, Any]] = {}
    try:
        for view in seeded.views:
            if view.who not in pages:
                pages[view.who] = open_as(browser, demo, det, view.who)
            page = pages[view.who][1]
            det.where = f"{view.who} {view.url}"
            response = page.goto(view.url, wait_until="load")
            assert response is not None and response.status == 200, (view.url, response)
            if view.json:
                assert response.headers["content-type"].startswith("application/json")
                assert response.headers["x-content-type-options"] == "nosniff"
                body = page.evaluate(TEXT)
                shown = {int(n) for n in re.findall(r"__xss\((\d+)\)", body)}
                assert len(shown) >= view.json, (view.url, len(shown))  # the payloads are there
            det.check_dom(page, view.texts)

        # Carl's own away text, in 600-character slices, on the away page.
        carl_page = pages["carl@maple.test"][1]
        for away in _slices([prepare_away_text(p) for p in PAYLOADS], 600):
            with unit_of_work(demo.runtime.db) as uow:
                team.set_away(uow, seeded.carl_actor, on=None, text=away)
            det.where = "carl /messages/away"
            carl_page.goto("/messages/away", wait_until="load")
            det.check_dom(carl_page, [away])

        # Search terms echoed by the two searches ("… found for “term”").
        for url, label, region in (
            ("/clients", "Search clients by name", "#client-results"),
            ("/messages/new", "Search clients and team members by name", "#results"),
        ):
            carl_page.goto(url, wait_until="load")
            box = carl_page.get_by_label(label)
            for term in seeded.search_terms:
                det.where = f"carl {url} search"
                with carl_page.expect_response(lambda r: r.url.endswith("/search")):
                    box.fill(term[:100])
                    box.press("Enter")
                carl_page.wait_for_timeout(50)
                det.check_dom(carl_page)
            assert carl_page.locator(region).count() == 1
    finally:
        for ctx, _page in pages.values():
            ctx.close()
    time.sleep(1.0)  # reports are sent asynchronously
    elapsed = time.monotonic() - started
    print(
        f"\nT16: {len(PAYLOADS)} payloads, {len(seeded.views)} views (+ away, searches), ", end=""
    )
    print(f"{elapsed:.0f}s")
    assert not det.fired, det.fired[:10]
    assert not det.dialogs, det.dialogs[:10]
    assert not det.csp, det.csp[:10]
    assert not det.dom, det.dom[:10]
    assert not det.missing, det.missing[:5]
    assert not csp_log_lines(demo), csp_log_lines(demo)[:10]


def _slices(texts: list[str], limit: int) -> list[str]:
    out: list[str] = []
    current = ""
    for t in texts:
        joined = f"{current} {t}" if current else t
        if len(joined) > limit:
            out.append(current)
            joined = t
        current = joined
    return [*out, current] if current else out


def test_the_checks_can_fail(browser: Any, seeded: Seeded):
    """Each detector sees a real violation: a script that runs calls the beacon; an
    injected inline script is blocked and reported (in the page and to /csp-report);
    a `javascript:` link and an inline handler are found in the DOM; text that is not
    there is missing."""
    demo = seeded.demo
    det = Detectors()
    ctx, page = open_as(browser, demo, det, "carl@maple.test")
    try:
        det.where = "control"
        page.goto("/messages", wait_until="load")
        page.evaluate("() => __xss(-1)")  # the beacon is wired
        before = len(csp_log_lines(demo))
        page.evaluate(
            """() => {
              const s = document.createElement('script');
              s.textContent = '__xss(-2)';
              document.body.appendChild(s);
              const a = document.createElement('a');
              a.href = 'javascript:__xss(-3)';
              a.setAttribute('onclick', '__xss(-4)');
              a.textContent = 'control';
              document.body.appendChild(a);
            }"""
        )
        page.evaluate("() => document.querySelector('a[onclick]').click()")
        page.wait_for_timeout(300)
        det.check_dom(page, ["text that is not on the page"])
        deadline = time.monotonic() + 10
        while len(csp_log_lines(demo)) == before and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        ctx.close()
    assert [n for _, n in det.fired] == [-1]  # CSP kept -2 and -4 from running
    directives = {d for _, d, _ in det.csp}
    assert "script-src-elem" in directives, det.csp
    assert {"script-src-attr"} & directives or "script-src" in directives, det.csp
    assert any("a[onclick]" in b for _, bad in det.dom for b in bad), det.dom
    assert any("a[href=javascript:" in b for _, bad in det.dom for b in bad), det.dom
    assert det.missing == [("control", ["text that is not on the page"])]
    lines = csp_log_lines(demo)[before:]
    assert any("directive=script-src-elem blocked=inline" in line for line in lines), lines
    assert not any("__xss" in line for line in csp_log_lines(demo))  # never the sample
