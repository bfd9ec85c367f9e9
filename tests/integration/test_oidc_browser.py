"""PA3 end to end in Chromium: the sign-in page's "Sign in with …" button → the local
test provider (tests/oidc_provider.py: its /authorize approves the test's person at
once) → the callback → the client portal, signed in. The sign-in page with the button
passes axe-core and is screenshotted. Runs the app with uvicorn on 127.0.0.1 in a
thread, like test_links_browser.py."""

import re
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from confide.runtime import Runtime, build_runtime
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests.browser.conftest import axe_violations, shot
from tests.conftest import make_settings
from tests.integration.test_links_browser import ARGS, CHROMIUM, pytestmark  # noqa: F401
from tests.mailsink import free_port
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider
from tests.personas import World, build_world, start


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Runtime, Provider]]:
    with running_provider() as provider:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        settings = make_settings(
            tmp_path_factory.mktemp("oidc-browser"),
            secure_cookies=False,
            public_origin=origin,
            oidc_issuer=provider.base,
            oidc_client_id=CLIENT_ID,
            oidc_client_secret=CLIENT_SECRET,
            oidc_display_name="Google",
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
        yield origin, runtime, provider
        server.should_exit = True
        thread.join(timeout=10)
        runtime.close()


def test_pa3_sign_in_with_google_in_chromium(served: tuple[str, Runtime, Provider]):
    from playwright.sync_api import expect, sync_playwright

    origin, runtime, provider = served
    world: World = build_world(runtime)
    conv = start(world, "carl", client="alex", text="See you on Tuesday").conversation.id
    with unit_of_work(runtime.db, write=False) as uow:
        email = uow.people.get_client(world.practice_a, world.id("alex")).email
    provider.next_login = {"email": email, "sub": "alex-google-subject"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        problems: list[str] = []
        for name, viewport in (
            ("desktop", {"width": 1280, "height": 800}),
            ("phone", {"width": 360, "height": 740}),
        ):
            context = browser.new_context(viewport=viewport)
            page = context.new_page()
            page.goto(f"{origin}/signin")
            button = page.get_by_role("link", name="Sign in with Google")
            expect(button).to_be_visible()
            shot(page, f"signin-oidc-{name}")
            problems += [f"{name}: {v['id']} {v['nodes']}" for v in axe_violations(page)]
            button.click()
            page.wait_for_url(f"{origin}/portal")
            expect(page.get_by_role("link", name=re.compile("Carl"))).to_be_visible()
            cookies = {c["name"]: c for c in context.cookies()}
            assert cookies["confide_session"]["httpOnly"]
            assert "confide_oidc" not in cookies  # the pre-auth cookie is gone
            opened = page.request.get(f"{origin}/api/v1/conversations/{conv}")
            assert opened.status == 200 and "See you on Tuesday" in opened.text()
            context.close()
        # A refusal (the provider vouches for an address nobody has): the sign-in page.
        provider.next_login = {"email": "stranger@example.test"}
        page = browser.new_page()
        page.goto(f"{origin}/signin")
        page.get_by_role("link", name="Sign in with Google").click()
        page.wait_for_url(f"{origin}/signin?oidc=failed")
        expect(page.get_by_role("alert")).to_contain_text("That sign-in did not work")
        browser.close()
    assert problems == []
