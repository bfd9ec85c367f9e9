"""Settings and the client overview in the browser: EN1 (client messaging needs team
messaging), EN2 (a member's box), EN3/EN6 (a client's "Use secure messaging": off ends
their portal at once, the history stays for the team), contacts."""

import re
import uuid

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
OLIVIA = "olivia@maple.test"


def test_en6_turning_a_clients_messaging_off_ends_their_portal_at_once(open_page):
    olivia, _ = open_page(OLIVIA)
    alex, _ = open_page("Alex Rivera")
    alex.get_by_role("link", name=re.compile("Carl Chen")).first.click()
    expect(alex.locator("#messages li").first).to_be_visible()

    olivia.get_by_role("link", name="Clients").click()
    olivia.get_by_role("link", name=re.compile("Alex Rivera")).click()
    portal = olivia.get_by_role("region", name="Client portal")
    messaging = portal.get_by_label("Use secure messaging")
    expect(messaging).to_be_checked()
    messaging.uncheck()
    portal.get_by_role("button", name="Save").click()
    expect(olivia.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    try:
        alex.reload()  # the open conversation is gone for the client (EN6)
        expect(alex.locator("#messages")).to_have_count(0)
        alex.goto("/portal")
        expect(alex.locator("#conv-list")).to_contain_text("No conversations")
        # ... and the history stays intact for the team.
        carl, _ = open_page("carl@maple.test")
        carl.get_by_role("link", name=re.compile("Alex Rivera")).first.click()
        expect(carl.locator("#messages li").first).to_be_visible()
        expect(carl.get_by_role("note")).to_contain_text("turned off")
    finally:
        portal = olivia.get_by_role("region", name="Client portal")
        portal.get_by_label("Use secure messaging").check()
        portal.get_by_role("button", name="Save").click()
        expect(olivia.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    alex.goto("/portal")
    expect(alex.locator("#conv-list")).to_contain_text("Carl Chen")


def test_en1_en2_messaging_settings(open_page):
    olivia, _ = open_page(OLIVIA)
    olivia.get_by_role("link", name="Settings").click()
    expect(olivia.get_by_role("heading", name="Messaging", level=1)).to_be_visible()
    team = olivia.get_by_label("Messaging with the team")
    clients = olivia.get_by_label("Messaging with clients")
    expect(team).to_be_checked()
    expect(clients).to_be_checked()
    # EN1: client messaging without team messaging is refused with a clear message.
    team.uncheck()
    olivia.get_by_role("button", name="Save").click()
    expect(olivia.get_by_role("alert")).to_contain_text("team before messaging with clients")
    olivia.go_back()
    olivia.reload()
    expect(olivia.get_by_label("Messaging with the team")).to_be_checked()  # nothing changed

    # EN2: a member's box, and the member stops receiving.
    row = olivia.get_by_role("row", name=re.compile("Scott Sato"))
    row.get_by_role("button", name="Disable secure messaging for Scott Sato").click()
    row = olivia.get_by_role("row", name=re.compile("Scott Sato"))
    expect(row).to_contain_text("Not enabled")
    row.get_by_role("button", name="Enable secure messaging for Scott Sato").click()
    expect(olivia.get_by_role("row", name=re.compile("Scott Sato"))).to_contain_text("Enabled")


def test_a_clinician_adds_a_contact_who_can_then_be_messaged(open_page):
    carl, _ = open_page("carl@maple.test")
    carl.get_by_role("link", name="Clients").click()
    carl.get_by_role("link", name=re.compile("Alex Rivera")).click()
    carl.get_by_text("Add a contact").click()
    name = f"Robin Rivera {uuid.uuid4().hex[:4]}"
    carl.get_by_label("Name").fill(name)
    carl.get_by_label(re.compile("^Relationship")).fill("Partner")
    carl.locator("form[action$='/contacts']").get_by_label("Portal access").check()
    carl.locator("form[action$='/contacts']").get_by_label("Use secure messaging").check()
    carl.get_by_role("button", name="Add contact").click()
    expect(carl.get_by_role("region", name="Contacts")).to_contain_text(name)
    carl.goto("/messages/new")
    carl.get_by_label("Search clients and team members by name").fill("Alex")
    expect(carl.locator("#results")).to_contain_text("Alex Rivera")
