"""Every page passes axe-core (WCAG 2.1 A/AA and best practice: labels, roles,
contrast …) at desktop and phone width, screenshots of each are written to
tests/browser/screenshots/, and the main flow works with the keyboard alone."""

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from confide.domain.actors import Actor, Party, Via
from confide.services import clients, messaging, team
from confide.store.uow import unit_of_work
from tests.browser.conftest import DESKTOP, PHONE, Demo, axe_violations, shot

pytestmark = pytest.mark.browser


def casey_messaging_off(demo: Demo) -> int:
    """The EN5 step needs a client of Carl's whose messaging is off."""
    owner = Actor(demo.practice_id, Party.member(demo.member_id("olivia@maple.test")), Via.INTERNAL)
    casey = demo.client_id("Casey Morgan")
    with unit_of_work(demo.runtime.db) as uow:
        clients.set_client_messaging(uow, owner, casey, messaging_enabled=False)
    return casey


def scott_of(demo: Demo) -> Actor:
    return Actor(demo.practice_id, Party.member(demo.member_id("scott@maple.test")), Via.INTERNAL)


def check(page: Page, name: str, size: str) -> list[str]:
    page.wait_for_load_state("load")
    shot(page, f"{name}-{size}")
    return [f"{name}@{size}: {v['id']} ({v['impact']}) {v['nodes']}" for v in axe_violations(page)]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_page_passes_axe_and_is_screenshotted(open_page, demo: Demo, size: str):
    viewport = DESKTOP if size == "desktop" else PHONE
    casey = casey_messaging_off(demo)
    problems: list[str] = []

    anon, anon_watch = open_page(viewport=viewport)
    anon.goto("/signin")
    problems += check(anon, "signin", size)
    anon.get_by_label("Email").fill("carl@maple.test")
    anon.get_by_label("Password").fill("not the password")
    anon.get_by_role("button", name="Sign in").click()
    expect(anon.get_by_role("alert")).to_be_visible()
    problems += check(anon, "signin-error", size)

    carl, carl_watch = open_page("carl@maple.test", viewport=viewport)
    problems += check(carl, "messages", size)
    conv = carl.locator(".conv", has_text="Alex Rivera").first.get_attribute("href")
    carl.goto(conv or "/messages")
    problems += check(carl, "thread", size)
    carl.get_by_role("button", name=re.compile("Remove message")).first.click()
    expect(carl.get_by_role("dialog")).to_be_visible()
    problems += check(carl, "remove-confirm", size)
    carl.keyboard.press("Escape")
    carl.goto("/messages/new")
    problems += check(carl, "new-message", size)
    carl.goto(f"/messages/new?to=client:{casey}")
    expect(carl.get_by_role("button", name="Enable secure messaging")).to_be_visible()
    problems += check(carl, "new-message-enable", size)
    carl.goto("/messages/away")
    problems += check(carl, "away", size)
    carl.goto(f"/messages/{10**9}")
    problems += check(carl, "not-found", size)

    olivia, olivia_watch = open_page("olivia@maple.test", viewport=viewport)
    olivia.goto("/settings/messaging")
    problems += check(olivia, "settings-messaging", size)
    olivia.goto("/settings/team")
    olivia.locator("summary", has_text="Carl Chen").click()
    problems += check(olivia, "settings-team", size)
    olivia.goto("/clients")
    problems += check(olivia, "clients", size)
    olivia.get_by_role("link", name=re.compile("Alex Rivera")).click()
    olivia.get_by_text("Add a contact").click()
    problems += check(olivia, "client-overview", size)

    alex, alex_watch = open_page("Alex Rivera", viewport=viewport)
    problems += check(alex, "portal", size)
    alex.get_by_role("link", name=re.compile("Carl Chen")).first.click()
    problems += check(alex, "portal-thread", size)
    alex.goto("/portal/new")
    problems += check(alex, "portal-new", size)
    assert problems == []
    # T27: no request to any origin but the app's own (no CDN, fonts, analytics).
    host = demo.base.split("://", 1)[1]
    watches = (anon_watch, carl_watch, olivia_watch, alex_watch)
    urls = [u for w in watches for u in w.requests]
    assert any(u.startswith(f"ws://{host}/api/v1/ws") for u in urls)  # the live socket
    assert [u for u in urls if u.split("://", 1)[1].split("/", 1)[0] != host] == []


def test_the_main_flow_works_with_the_keyboard_alone(open_page, demo: Demo):
    page, watch = open_page()
    page.goto("/signin")

    def tab_to(name: str, *, limit: int = 40) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            label = page.evaluate(
                """() => { const e = document.activeElement;
                   return (e.getAttribute('aria-label') || e.labels?.[0]?.textContent
                           || e.textContent || '').trim(); }"""
            )
            if re.search(name, label or ""):
                return
        raise AssertionError(f"Tab never reached {name!r}")

    tab_to("^Email$")
    page.keyboard.type("carl@maple.test")
    tab_to("^Password$")
    page.keyboard.type("maple-street-demo")
    page.keyboard.press("Enter")
    page.wait_for_url("**/messages")
    tab_to("Alex Rivera")
    page.keyboard.press("Enter")
    expect(page.locator("#thread-title")).to_contain_text("Alex Rivera")
    tab_to("^Message$")
    text = f"Typed with the keyboard only {uuid.uuid4().hex[:6]}"
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_contain_text(text)
    # Remove it with the keyboard: the trash button, then the dialog's own buttons.
    mine = page.locator("#" + str(page.locator("#messages li", has_text=text).get_attribute("id")))
    mine.get_by_role("button", name=re.compile("Remove message")).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_role("dialog").get_by_role("button", name="Remove")).to_be_focused()
    page.keyboard.press("Enter")
    expect(mine).to_contain_text("This message was removed")
    assert watch.errors == []


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_records_pages_pass_axe_and_are_screenshotted(open_page, demo: Demo, size: str):
    """The records pages (issue 7): transcripts, chart notes on the record, data export
    (with the password shown), the audit log, announcements for the team and the portal."""
    viewport = DESKTOP if size == "desktop" else PHONE
    problems: list[str] = []
    alex = demo.client_id("Alex Rivera")
    olivia, _ = open_page("olivia@maple.test", viewport=viewport)
    olivia.goto(f"/clients/{alex}/transcript")
    problems += check(olivia, "transcript", size)
    olivia.locator("input.pick").first.check()
    olivia.get_by_role("button", name="Copy to chart note").click()
    olivia.wait_for_url(re.compile(r"noted="))
    problems += check(olivia, "client-with-chart-note", size)
    olivia.goto("/settings/export")
    olivia.get_by_role("button", name="Start export").click()
    expect(olivia.get_by_label("Export password")).to_be_visible()
    problems += check(olivia, "settings-export", size)
    olivia.goto("/settings/audit")
    problems += check(olivia, "settings-audit", size)
    olivia.goto("/announcements")
    olivia.get_by_label("Announcement", exact=True).fill(f"Axe check {size}")
    olivia.get_by_role("button", name="Send announcement").click()
    expect(olivia.get_by_role("status").filter(has_text="Announcement sent.")).to_be_visible()
    problems += check(olivia, "announcements", size)
    client, _ = open_page("Alex Rivera", viewport=viewport)
    client.goto("/portal/announcements")
    problems += check(client, "portal-announcements", size)
    assert problems == []


def test_a_focused_conversation_keeps_focus_when_the_list_refreshes(open_page, demo: Demo):
    """Every new message (and the socket's first frame) rebuilds the conversation list.
    A keyboard user who had tabbed to a conversation keeps their place: the same
    conversation's link has focus in the new list, rather than the page's body (which
    sends the next Tab back to the top of the page, and the Enter they meant for the
    conversation nowhere)."""
    page, watch = open_page("carl@maple.test")
    links = page.locator("#conv-list a")
    alex = links.filter(has_text="Alex Rivera")
    scott_href = links.filter(has_text="Scott Sato").get_attribute("href") or ""
    page.evaluate("document.querySelectorAll('#conv-list a').forEach(a => a.dataset.before = '1')")
    alex.focus()
    alex_href = alex.get_attribute("href")

    scott = scott_of(demo)
    tag = uuid.uuid4().hex[:6]
    with unit_of_work(demo.runtime.db) as uow:
        messaging.send_message(
            uow,
            scott,
            messaging.SendMessage(int(scott_href.rsplit("/", 1)[1]), f"focus {tag}", f"f-{tag}"),
        )
    expect(page.locator("#conv-list a[data-before]")).to_have_count(0)  # the list was rebuilt
    scott_link = page.locator(f'#conv-list a[href="{scott_href}"]')
    expect(scott_link.locator(".count")).to_have_count(1)  # its unread badge: the new message
    assert page.evaluate("document.activeElement.getAttribute('href')") == alex_href
    assert watch.errors == []


def test_the_back_link_keeps_focus_when_the_thread_heading_refreshes(open_page, demo: Demo):
    """The thread's heading is rebuilt when a participant's away state changes; on a
    phone its "← Conversations" link keeps focus if it had it."""
    page, watch = open_page("carl@maple.test", viewport=PHONE)
    page.goto("/messages")
    scott_href = page.locator("#conv-list a").filter(has_text="Scott Sato").get_attribute("href")
    page.goto(scott_href or "")
    back = page.locator("#thread-head a.back")
    back.focus()
    back_href = back.get_attribute("href")
    scott = scott_of(demo)
    try:
        with unit_of_work(demo.runtime.db) as uow:
            team.set_away(uow, scott, on=True, text=None)
        expect(page.locator("#thread-title")).to_contain_text("(Away)")  # rebuilt
        assert page.evaluate("document.activeElement.getAttribute('href')") == back_href
    finally:
        with unit_of_work(demo.runtime.db) as uow:
            team.set_away(uow, scott, on=False, text=None)
    assert watch.errors == []
