"""PA5 / T15 in Chromium: a team member and a client leave a conversation open past the
practice's idle timeout; within seconds the page shows the sign-in page (the server
ends the session, the socket closes with 4401, the page goes to /signin), and no health
information stays: not in the page, not in localStorage or sessionStorage, not in
IndexedDB, not in the service worker's caches; the sign-in page clears the site's
data; Back shows no health information; signing in again works.

The app runs in this process (uvicorn in a thread, like tests/integration/
test_links_browser.py) so that time-machine can move the server's clock past the
timeout: the practice's idle timeout stays the real 5 minutes, nobody waits for them.
"""

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from playwright.sync_api import Page, expect

from confide.domain.actors import Actor, Via
from confide.runtime import Runtime, build_runtime
from confide.services import security_settings, sessions
from confide.store.clock import utcnow
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests.browser.conftest import DESKTOP
from tests.conftest import make_settings
from tests.mailsink import free_port
from tests.personas import PASSWORD, World, build_world, start

pytestmark = pytest.mark.browser

STORAGE = """async (canary) => {
  const found = [];
  for (const store of [localStorage, sessionStorage]) {
    for (let i = 0; i < store.length; i++) {
      const k = store.key(i);
      if ((k + store.getItem(k)).includes(canary)) { found.push('web storage: ' + k); }
    }
  }
  for (const name of await caches.keys()) {
    const cache = await caches.open(name);
    for (const req of await cache.keys()) {
      const res = await cache.match(req);
      if ((await res.text()).includes(canary)) { found.push('cache ' + name + ': ' + req.url); }
    }
  }
  if (indexedDB.databases) {
    for (const db of await indexedDB.databases()) { found.push('indexedDB: ' + db.name); }
  }
  return found;
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Runtime]]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    settings = make_settings(
        tmp_path_factory.mktemp("idle"), secure_cookies=False, public_origin=origin
    )
    runtime = build_runtime(settings)
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started and time.monotonic() < end:
        time.sleep(0.05)
    assert server.started
    yield origin, runtime
    server.should_exit = True
    thread.join(timeout=10)
    runtime.close()


def session_for(world: World, name: str) -> str:
    actor = world.actor(name)
    with unit_of_work(world.runtime.db) as uow:
        return sessions.start_session(uow, Actor(actor.practice_id, actor.party, Via.PASSWORD))


def open_thread(browser: object, origin: str, session_id: str, path: str, canary: str) -> Page:
    ctx = browser.new_context(viewport=DESKTOP, base_url=origin)  # type: ignore[attr-defined]
    ctx.add_cookies([{"name": "confide_session", "value": session_id, "url": origin}])
    page: Page = ctx.new_page()
    with page.expect_websocket() as socket:
        page.goto(path)
    ws = socket.value
    ws.wait_for_event("framereceived")  # the live socket is open ("ready")
    expect(page.get_by_text(canary).first).to_be_visible()
    page.evaluate("() => navigator.serviceWorker && navigator.serviceWorker.ready")
    return page


def test_pa5_idle_past_the_timeout_shows_the_sign_in_page_and_leaves_no_health_information(
    browser: object, served: tuple[str, Runtime]
):
    origin, runtime = served
    world = build_world(runtime)
    canary = f"PHICANARY-{uuid.uuid4().hex}"
    conv = start(world, "carl", client="alex", text=f"{canary} see you Tuesday").conversation.id
    with unit_of_work(runtime.db) as uow:  # the practice's idle timeout: 5 minutes (PA5)
        security_settings.set_security_settings(uow, world.actor("olivia"), session_idle_minutes=5)
    carl = open_thread(browser, origin, session_for(world, "carl"), f"/messages/{conv}", canary)
    alex = open_thread(browser, origin, session_for(world, "alex"), f"/portal/{conv}", canary)
    assert carl.evaluate(STORAGE, canary) == [] and alex.evaluate(STORAGE, canary) == []

    registrations = "async () => (await navigator.serviceWorker.getRegistrations()).length"
    assert carl.evaluate(registrations) == 1  # the app's service worker (NT4, offline shell)
    # 4 minutes idle: still signed in (the sockets' pings do not count as activity).
    with time_machine.travel(utcnow() + timedelta(minutes=4), tick=True):
        time.sleep(2.5)
        assert carl.url.endswith(f"/messages/{conv}")
    # Past 5 minutes idle: both pages go to the sign-in page by themselves, within seconds.
    with time_machine.travel(utcnow() + timedelta(minutes=5, seconds=5), tick=True):
        for page in (carl, alex):
            page.wait_for_url("**/signin", timeout=10_000)
            expect(page.get_by_role("heading", name="Sign in to Confide")).to_be_visible()
            assert canary not in page.content()
            assert "Alex" not in page.inner_text("body")
            assert page.evaluate(STORAGE, canary) == []
        # The sign-in page told the browser to drop the site's storage, caches and
        # service worker (Clear-Site-Data; its header: test_security_pages.py).
        assert carl.evaluate(registrations) == 0
        # Back: the thread is fetched again (no-store) and the server sends sign-in.
        carl.go_back()
        carl.wait_for_load_state("load")
        assert canary not in carl.content()
        assert carl.url.endswith("/signin")
        # Signing in again works from this page (its form is not bound to the dead
        # session's cookie).
        carl.get_by_label("Email").fill(world.emails["carl"])
        carl.get_by_label("Password").fill(PASSWORD)
        carl.get_by_role("button", name="Sign in").click()
        carl.wait_for_url("**/messages")
