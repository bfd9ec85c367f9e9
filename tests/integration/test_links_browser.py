"""The emailed links in a real browser (Chromium through Playwright): the demo mailbox
shows the email, the landing page renders under its CSP, and pressing its button (a
form POST whose Origin the browser sets) signs the person in and leaves the token out
of the address bar. Runs the app with uvicorn on 127.0.0.1 in a thread."""

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from confide.runtime import Runtime, build_runtime
from confide.web.app import create_app
from tests.conftest import make_settings
from tests.mailsink import free_port
from tests.personas import World, build_world, start

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
    pytest.mark.skipif(
        os.environ.get("CONFIDE_TEST_DATABASE") == "postgres", reason="embedded default only"
    ),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Runtime]]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    settings = make_settings(
        tmp_path_factory.mktemp("browser"),
        secure_cookies=False,
        public_origin=origin,
        unread_email_minutes=10,
    )
    runtime = build_runtime(settings)
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


def wait_for_mail(runtime: Runtime, n: int, timeout: float = 15.0) -> list[str]:
    folder = runtime.settings.mail_dir
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted(folder.glob("*.eml")) if folder.exists() else []
        if len(found) >= n:
            return [p.read_text() for p in found]
        time.sleep(0.1)
    raise AssertionError(f"{n} emails expected in {folder}")


def test_pa1_pa2_links_in_chromium_from_the_demo_mailbox(served: tuple[str, Runtime]):
    from playwright.sync_api import sync_playwright

    origin, runtime = served
    world: World = build_world(runtime)
    canary = "PHICANARY-browser"
    conv = start(world, "carl", client="alex", text=f"{canary} hello").conversation.id
    [mail] = wait_for_mail(runtime, 1)  # NT2, sent by the job runner inside the app
    link = re.search(r"http://\S+/l/m/\S+", mail)
    assert link and canary not in mail
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{origin}/dev/mailbox")
        page.click("text=You have a new secure message")
        page.click(f"a[href='{link.group(0)}']")
        assert page.title() == "You have a secure message · Confide"
        assert canary not in page.content()
        # The app's own stylesheet applies under the app's CSP (the page is on base.html).
        bg = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        assert bg == "rgb(246, 247, 249)"
        with page.expect_navigation():
            page.click("text=View message")
        assert page.url == f"{origin}/portal/{conv}"
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["confide_session"]["httpOnly"]
        body = page.request.get(f"{origin}/api/v1/conversations/{conv}")
        assert body.status == 200 and canary in body.text()
        assert all(r.startswith(origin) for r in requests)  # no third-party requests
        browser.close()
