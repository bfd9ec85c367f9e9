"""Browser tests: Debian's Chromium driven by Playwright (sync API) against a real
`confide serve --demo` subprocess on 127.0.0.1 (the demo practice, Maple Street).

Never `playwright install`: the browser is /usr/bin/chromium (`.ci/run` installs it).
SQLite only (a `serve` subprocess on the embedded default).

Team members sign in through the sign-in page. Clients have no sign-in page of their
own yet (the portal sign-in issue brings the email links): the tests start a client
session with the real service, `sessions.start_session`, in the same database, and
give the browser its cookie, exactly what a redeemed portal link will do.
"""

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from confide.config import Settings
from confide.demo import DEMO_PASSWORD
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.runtime import Runtime, build_runtime
from confide.services import sessions
from confide.store.uow import unit_of_work
from tests.integration.test_serve import CONFIDE, free_port

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
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
SHOTS = Path(__file__).parent / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}

pytestmark = [pytest.mark.browser]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if os.environ.get("CONFIDE_TEST_DATABASE") == "postgres":
        reason = "browser tests run against the embedded default (SQLite) only"
    elif not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (.ci/run installs it)"
    for item in items:
        if "tests/browser" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class Demo:
    base: str
    data_dir: Path
    runtime: Runtime  # the same database, opened by the test process

    def member_id(self, email: str) -> int:
        with unit_of_work(self.runtime.db, write=False) as uow:
            found = uow.people.find_login(email)
            assert found is not None, email
            return int(found[0].id)

    @property
    def practice_id(self) -> int:
        with unit_of_work(self.runtime.db, write=False) as uow:
            found = uow.people.find_login("olivia@maple.test")
            assert found is not None
            return int(found[0].practice_id)

    def client_id(self, name: str) -> int:
        from confide.services import clients

        owner = Actor(
            self.practice_id, Party.member(self.member_id("olivia@maple.test")), Via.INTERNAL
        )
        with unit_of_work(self.runtime.db) as uow:
            found = [c for c in clients.list_clients(uow, owner, q=name) if c.name == name]
        assert found, name
        return int(found[0].id)

    def client_session(self, name: str) -> str:
        """A portal session for a demo client (what a redeemed portal link gives)."""
        actor = Actor(
            self.practice_id, Party(PartyKind.CLIENT, self.client_id(name)), Via.MAGIC_LINK
        )
        with unit_of_work(self.runtime.db) as uow:
            return sessions.start_session(uow, actor)


def serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """`confide serve --demo` (demo mode: plain-http cookies, fast password hashing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    env["CONFIDE_FAST_PASSWORD_HASHING"] = "true"
    log = (data_dir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [CONFIDE, "serve", "--demo", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"confide serve did not start:\n{(data_dir / 'serve.log').read_text()}")


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp("browser-demo")
    port = free_port()
    proc = serve(data_dir, port)
    settings = Settings(data_dir=data_dir, demo=True, secure_cookies=False)  # type: ignore[call-arg]
    runtime = build_runtime(settings, run_migrations=False)
    try:
        yield Demo(f"http://127.0.0.1:{port}", data_dir, runtime)
    finally:
        runtime.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """Package scope, not session: Playwright's sync API keeps an event loop running
    in this thread while it is open, which would break `asyncio.run` in later tests;
    the server and the browser also stop before the other packages run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Watch:
    """Proof that no script of a message ran: dialogs, console errors, page errors."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []  # every URL the page asked for (T27)

    def attach(self, page: object) -> None:
        page.on("dialog", lambda d: (self.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: self.errors.append(str(e)))  # type: ignore[attr-defined]
        page.on("request", lambda r: self.requests.append(r.url))  # type: ignore[attr-defined]
        page.on("websocket", lambda w: self.requests.append(w.url))  # type: ignore[attr-defined]
        page.on(  # type: ignore[attr-defined]
            "console",
            lambda m: self.errors.append(m.text) if m.type == "error" else None,
        )


@pytest.fixture
def open_page(browser: object, demo: Demo) -> Iterator[Callable[..., tuple[object, Watch]]]:
    contexts: list[object] = []

    def make(
        who: str | None = None, *, viewport: dict[str, int] | None = None
    ) -> tuple[object, Watch]:
        ctx = browser.new_context(viewport=viewport or DESKTOP, base_url=demo.base)  # type: ignore[attr-defined]
        contexts.append(ctx)
        page = ctx.new_page()
        watch = Watch()
        watch.attach(page)
        if who and "@" in who:
            sign_in(page, who)
        elif who:
            ctx.add_cookies(
                [{"name": "confide_session", "value": demo.client_session(who), "url": demo.base}]
            )
            page.goto("/")
        return page, watch

    yield make
    for ctx in contexts:
        ctx.close()  # type: ignore[attr-defined]


def sign_in(page: object, email: str) -> None:
    page.goto("/signin")  # type: ignore[attr-defined]
    page.get_by_label("Email").fill(email)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(DEMO_PASSWORD)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/messages")  # type: ignore[attr-defined]


def axe_violations(page: object) -> list[dict[str, object]]:
    """axe-core, run in the page: WCAG 2.x A/AA rules (labels, roles, contrast …)."""
    page.evaluate(AXE.read_text())  # type: ignore[attr-defined]
    result = page.evaluate(  # type: ignore[attr-defined]
        """async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}});
            return r.violations.map(v => ({id: v.id, impact: v.impact,
                nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
        }"""
    )
    return list(result)


def shot(page: object, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]
