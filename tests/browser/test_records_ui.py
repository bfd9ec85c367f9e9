"""The records pages in Debian's Chromium against a real `confide serve --demo`:
copying transcript messages into a chart note (TR2), and the data export page (EX3,
EX4): the password shown once with a working copy button, the list following the
export to "Ready" by itself (htmx polling), and the password gone after a reload."""

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from confide.domain.actors import Actor, Party, Via
from confide.services import messaging
from confide.store.uow import unit_of_work
from tests.browser.conftest import Demo, shot

pytestmark = pytest.mark.browser


def carl_writes_to_alex(demo: Demo, text: str) -> None:
    carl = Actor(demo.practice_id, Party.member(demo.member_id("carl@maple.test")), Via.INTERNAL)
    alex = demo.client_id("Alex Rivera")  # its own unit of work: before ours (one writer)
    with unit_of_work(demo.runtime.db) as uow:
        messaging.start_conversation(
            uow,
            carl,
            messaging.StartConversation(
                member_ids=(),
                client_id=alex,
                text=text,
                idempotency_key=uuid.uuid4().hex,
            ),
        )


def test_tr2_tick_messages_and_copy_them_to_a_chart_note(open_page, demo: Demo):
    marker = f"Chart this {uuid.uuid4().hex[:8]}"
    carl_writes_to_alex(demo, marker)
    page, watch = open_page("carl@maple.test")
    page.goto(f"/clients/{demo.client_id('Alex Rivera')}")
    page.get_by_role("link", name="Open transcripts").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Transcripts of Alex Rivera")
    item = page.locator("li.tmsg", has_text=marker)
    expect(item).to_be_visible()
    item.locator("label.sender").click()  # the sender's name is the checkbox's label
    expect(item.locator("input.pick")).to_be_checked()
    shot(page, "transcript-ticked")
    page.get_by_role("button", name="Copy to chart note").click()
    page.wait_for_url(re.compile(r"/clients/\d+\?noted=\d+"))
    expect(page.get_by_role("status").filter(has_text="Chart note saved.")).to_be_visible()
    notes = page.locator("ol.chart-notes li.chart-note").first
    expect(notes).to_contain_text(marker)
    expect(notes).to_contain_text("copied by Carl Chen")
    page.locator("#chart-notes").scroll_into_view_if_needed()
    shot(page, "client-chart-notes")
    assert watch.errors == [] and watch.dialogs == []


def test_ex3_ex4_export_password_shown_once_copy_button_and_live_progress(open_page, demo: Demo):
    page, watch = open_page("olivia@maple.test")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=demo.base)
    page.goto("/settings")
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Data export").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Data export")
    expect(page.get_by_label("Protect with a password")).to_be_checked()
    page.get_by_role("button", name="Start export").click()
    secret = page.get_by_label("Export password")
    expect(secret).to_be_visible()
    password = secret.input_value()
    assert len(password) >= 22
    page.get_by_role("button", name="Copy password").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == password
    expect(page.locator("#live-status")).to_have_text("Copied to the clipboard.")
    shot(page, "export-password")
    # The list follows the export to "Ready" by itself (htmx polling, EX4).
    row = page.locator("#export-list tbody tr").first
    expect(row.locator(".state")).to_have_text("Ready", timeout=30_000)
    expect(row.get_by_role("link", name="Download")).to_be_visible()
    shot(page, "export-ready")
    # Shown once: a reload (a new GET) never shows it again.
    page.goto("/settings/export")
    expect(page.get_by_role("heading", level=1)).to_have_text("Data export")
    assert password not in page.content()
    with page.expect_download() as got:
        page.locator("#export-list tbody tr").first.get_by_role("link", name="Download").click()
    assert got.value.suggested_filename.startswith("confide-export-")
    assert watch.errors == [] and watch.dialogs == []


def test_an1_announcement_sent_from_the_page_shows_in_the_portal(open_page, demo: Demo):
    text = f"Office closed Friday {uuid.uuid4().hex[:6]}"
    page, _ = open_page("carl@maple.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Announcements").click()
    page.get_by_label("Announcement", exact=True).fill(text)
    page.get_by_role("button", name="Send announcement").click()
    expect(page.get_by_role("status").filter(has_text="Announcement sent.")).to_be_visible()
    alex, _ = open_page("Alex Rivera")
    alex.get_by_role("link", name="Announcements").click()
    expect(alex.locator("ol.announcements")).to_contain_text(text)
    check_no_reply(alex)


def check_no_reply(page: Page) -> None:
    assert page.locator("textarea").count() == 0
