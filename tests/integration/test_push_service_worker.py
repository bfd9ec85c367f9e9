"""NT4, NT1: the service worker's push handling (src/confide/web/static/push.js) in a
real Chromium: a push shows only the generic title and body, whatever the payload says,
and tapping opens only one of our conversation paths."""

import functools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

PUSH_JS = Path(__file__).resolve().parents[2] / "src" / "confide" / "web" / "static" / "push.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The test's service worker: records the listeners push.js adds, then loads it the way
# the web app's sw.js does.
SW = """
self.__handlers = {};
const add = self.addEventListener.bind(self);
self.addEventListener = (type, fn, opts) => { self.__handlers[type] = fn; add(type, fn, opts); };
importScripts('/static/push.js');
"""

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("sw-site")
    (root / "static").mkdir()
    shutil.copy(PUSH_JS, root / "static" / "push.js")
    (root / "sw.js").write_text(SW)
    (root / "index.html").write_text("<!doctype html><title>Confide</title><p>app</p>")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"  # loopback: a secure context
    server.shutdown()
    server.server_close()


def test_nt4_nt1_the_service_worker_shows_only_a_generic_notification_and_opens_our_paths(
    site: str,
):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = browser.new_context()
            ctx.grant_permissions(["notifications"], origin=site)
            page = ctx.new_page()
            page.goto(f"{site}/index.html")
            page.evaluate(
                "async () => { await navigator.serviceWorker.register('/sw.js');"
                " await navigator.serviceWorker.ready; }"
            )
            cdp = ctx.new_cdp_session(page)
            registrations: list[dict[str, Any]] = []
            cdp.on(
                "ServiceWorker.workerRegistrationUpdated",
                lambda e: registrations.extend(e["registrations"]),
            )
            cdp.send("ServiceWorker.enable")
            deadline = time.monotonic() + 10
            while not registrations and time.monotonic() < deadline:
                page.wait_for_timeout(50)
            reg_id = registrations[0]["registrationId"]

            def push(data: dict[str, Any]) -> None:
                cdp.send(
                    "ServiceWorker.deliverPushMessage",
                    {"origin": site, "registrationId": reg_id, "data": json.dumps(data) + " " * 40},
                )

            push({"type": "new_message", "conversation_id": 42, "url": "/messages/42"})
            # A payload that tries to show text or send the user elsewhere.
            push(
                {
                    "title": "MARKER Alex Client wrote",
                    "body": "MARKER the text",
                    "conversation_id": 7,
                    "url": "https://evil.example/phish",
                }
            )
            shown: list[list[Any]] = []
            deadline = time.monotonic() + 10
            while len(shown) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(100)
                shown = page.evaluate(
                    "async () => (await (await navigator.serviceWorker.ready).getNotifications())"
                    ".map(n => [n.title, n.body, n.tag, n.data])"
                )
            assert sorted(shown, key=lambda n: n[2]) == [
                [
                    "New secure message",
                    "Open Confide to read it.",
                    "conversation-42",
                    {"url": "/messages/42"},
                ],
                ["New secure message", "Open Confide to read it.", "conversation-7", {"url": "/"}],
            ]
            assert "MARKER" not in json.dumps(shown)

            # Tapping: no window is controlled by the worker yet, so it opens one.
            worker = ctx.service_workers[0]
            opened = worker.evaluate(
                """async (urls) => {
                    const opened = [];
                    self.clients.openWindow = async (u) => { opened.push(u); return null; };
                    for (const url of urls) {
                        let done;
                        self.__handlers.notificationclick({
                            notification: { data: { url }, close() {} },
                            waitUntil(p) { done = p; },
                        });
                        await done;
                    }
                    return opened;
                }""",
                ["/portal/7", "/messages/42", "javascript:alert(1)", "//evil.example/x"],
            )
            assert opened == [
                f"{site}/portal/7",
                f"{site}/messages/42",
                f"{site}/",
                f"{site}/",
            ]
        finally:
            browser.close()
