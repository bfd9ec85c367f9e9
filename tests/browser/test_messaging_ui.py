"""The practice web app and the client portal in a real browser (issue 4, "What must
hold"): two people converse live, removal, away banner, enable-in-composer, unread
bubble, PM4 in the portal, Enter/Shift+Enter, hostile text shown as text."""

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Demo, shot

pytestmark = pytest.mark.browser
CARL = "carl@maple.test"


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def open_conversation_with(page: Page, name: str) -> None:
    page.get_by_role("link", name=re.compile(name)).first.click()
    expect(page.locator("#thread-title")).to_contain_text(name)


def composer(page: Page):
    return page.get_by_role("textbox", name="Message")


def send(page: Page, text: str) -> None:
    box = composer(page)
    box.fill(text)
    box.press("Enter")
    expect(page.locator("#messages")).to_contain_text(text.splitlines()[0])
    expect(box).to_have_value("")


def test_nt5_clinician_and_client_converse_and_see_each_other_live(open_page):
    carl, carl_watch = open_page(CARL)
    alex, alex_watch = open_page("Alex Rivera")
    open_conversation_with(carl, "Alex Rivera")
    alex.get_by_role("link", name=re.compile("Carl Chen")).first.click()
    expect(alex.locator("#thread-title")).to_contain_text("Carl Chen")

    hello = unique("Hello from Carl")
    send(carl, hello)
    expect(alex.locator("#messages")).to_contain_text(hello)  # live, no reload

    reply = unique("Thanks Carl, see you Thursday")
    send(alex, reply)
    expect(carl.locator("#messages")).to_contain_text(reply)
    # Each side sees each message once (the sender's own socket frame does not double it).
    expect(carl.locator("#messages li", has_text=hello)).to_have_count(1)
    expect(alex.locator("#messages li", has_text=reply)).to_have_count(1)
    assert carl_watch.dialogs == alex_watch.dialogs == []
    assert carl_watch.errors == alex_watch.errors == []


def test_ms3_enter_sends_and_shift_enter_adds_a_line(open_page):
    carl, _ = open_page(CARL)
    open_conversation_with(carl, "Scott Sato")
    first, second = unique("first line"), unique("second line")
    box = composer(carl)
    box.click()
    box.type(first)
    box.press("Shift+Enter")
    box.type(second)
    expect(box).to_have_value(f"{first}\n{second}")  # Shift+Enter did not send
    box.press("Enter")
    message = carl.locator("#messages li", has_text=first)
    expect(message).to_have_count(1)
    assert message.locator(".msg-body").inner_text() == f"{first}\n{second}"
    expect(box).to_have_value("")
    # Enter on an empty composer sends nothing.
    count = carl.locator("#messages li").count()
    box.press("Enter")
    carl.wait_for_timeout(300)
    assert carl.locator("#messages li").count() == count


def test_ms1_ms2_counter_near_the_limit_and_emoji_suggestions(open_page):
    carl, watch = open_page(CARL)
    open_conversation_with(carl, "Scott Sato")
    box = composer(carl)
    box.fill("x" * 4400)
    box.type("y")
    expect(carl.locator("#composer-count")).to_have_text("")  # far from the limit: no count
    box.fill("x" * 4600)
    box.type("y")
    expect(carl.locator("#composer-count")).to_have_text("4601 / 5000")
    box.fill("")
    box.type("Great news :thumbs")
    listbox = carl.get_by_role("listbox", name="Emoji suggestions")
    expect(listbox).to_be_visible()
    expect(listbox.get_by_role("option").first).to_contain_text(":thumbsup:")
    box.press("ArrowDown")
    box.press("Enter")  # chooses the suggestion, does not send
    expect(box).to_have_value("Great news 👍")
    expect(listbox).to_be_hidden()
    box.fill("")
    # The prefix is part of the message being typed: it went in a POST body, no URL.
    assert any(u.endswith("/api/v1/emoji/search") for u in watch.requests), watch.requests
    assert not [u for u in watch.requests if "thumbs" in u]


def test_ms6_remove_asks_for_confirmation_and_both_sides_see_the_marker(open_page):
    carl, carl_watch = open_page(CARL)
    alex, _ = open_page("Alex Rivera")
    open_conversation_with(carl, "Alex Rivera")
    alex.get_by_role("link", name=re.compile("Carl Chen")).first.click()
    oops = unique("Sent to the wrong person")
    send(carl, oops)
    expect(alex.locator("#messages")).to_contain_text(oops)

    mine = carl.locator("#" + str(carl.locator("#messages li", has_text=oops).get_attribute("id")))
    mine.get_by_role("button", name=re.compile("Remove message")).click()
    dialog = carl.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()  # cancel: nothing happens
    expect(mine).to_contain_text(oops)

    mine.get_by_role("button", name=re.compile("Remove message")).click()
    carl.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(carl.locator("#messages")).not_to_contain_text(oops)
    expect(carl.locator("#messages")).to_contain_text("This message was removed")
    expect(alex.locator("#messages")).not_to_contain_text(oops)  # live on the other side
    expect(alex.locator("#messages")).to_contain_text("This message was removed")
    alex.reload()
    expect(alex.locator("#messages")).not_to_contain_text(oops)
    assert carl_watch.dialogs == []  # our own <dialog>, no browser confirm()


def test_ms7_unread_bubble_appears_live_and_opening_reads(open_page):
    carl, _ = open_page(CARL)
    alex, _ = open_page("Alex Rivera")
    carl.goto("/messages/away")  # anywhere but the conversation
    bubble = carl.locator("#unread-bubble")
    alex.get_by_role("link", name=re.compile("Carl Chen")).first.click()
    before = int(carl.locator("#unread-count").inner_text()) if bubble.is_visible() else 0
    send(alex, unique("Are we still on for Thursday?"))
    expect(bubble).to_be_visible()
    expect(carl.locator("#unread-count")).to_have_text(str(before + 1))
    carl.goto("/messages")
    open_conversation_with(carl, "Alex Rivera")  # opening reads it (MS7)
    expect(bubble).to_be_hidden()


def test_aw1_aw3_away_shows_in_the_nav_and_as_a_banner_clients_cannot_dismiss(open_page):
    carl, _ = open_page(CARL)
    alex, _ = open_page("Alex Rivera")
    alex.get_by_role("link", name=re.compile("Carl Chen")).first.click()
    expect(alex.locator(".away-banner")).to_have_count(0)

    carl.goto("/messages/away")
    text = unique("Away until Monday. In a crisis call or text 988.")
    carl.get_by_label("Customize the message").fill(text)
    expect(carl.locator("#away-count")).to_have_text(f"{len(text)} / 600")
    carl.get_by_label("On", exact=True).check()
    carl.get_by_role("button", name="Save").click()
    expect(carl.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    expect(carl.locator("#nav-away")).to_be_visible()  # "(Away)" next to Messages (AW1)
    try:
        banner = alex.locator(".away-banner")
        expect(banner).to_contain_text(text)  # live, without reloading (AW3)
        expect(alex.locator("#thread-title")).to_contain_text("(Away)")
        expect(banner.get_by_role("button")).to_have_count(0)  # nothing to dismiss it with
        shot(alex, "portal-away-banner-desktop")
        alex.keyboard.press("Escape")
        expect(banner).to_be_visible()
        note = unique("Message while Carl is away")
        send(alex, note)  # still delivered
        carl.goto("/messages")
        open_conversation_with(carl, "Alex Rivera")
        expect(carl.locator("#messages")).to_contain_text(note)
    finally:
        carl.goto("/messages")
        carl.get_by_role("button", name="Turn off").click()
        expect(carl.locator("#nav-away")).to_be_hidden()
    expect(alex.locator(".away-banner")).to_have_count(0)


def test_en5_enable_secure_messaging_from_the_new_message_dialog(open_page):
    carl, watch = open_page(CARL)
    carl.get_by_role("link", name="New message").click()
    carl.get_by_label("Search clients and team members by name").fill("Casey")
    expect(carl.get_by_role("status").filter(has_text="found")).to_have_text("1 person found.")
    # The term went in a POST body (htmx), never in a URL: the page did not navigate.
    assert carl.url.endswith("/messages/new")
    assert any(u.endswith("/messages/new/search") for u in watch.requests), watch.requests
    assert not [u for u in watch.requests if "Casey" in u or "?q=" in u]
    carl.locator("#results").get_by_role("link", name=re.compile("Casey Morgan")).click()
    expect(carl.get_by_role("note")).to_contain_text("Secure messaging is turned off")
    carl.get_by_role("button", name="Enable secure messaging").click()
    first = unique("Hi Casey, welcome to secure messaging")
    send_box = composer(carl)
    send_box.fill(first)
    send_box.press("Enter")
    expect(carl.locator("#thread-title")).to_contain_text("Casey Morgan")
    expect(carl.locator("#messages")).to_contain_text(first)


def test_clients_page_search_keeps_the_term_out_of_urls(open_page):
    """The client list's search: typed or submitted with Enter, the results swap in
    (htmx POST with the CSRF token), a status line announces the count, and no URL the
    browser asked for, nor its history, holds the term."""
    carl, watch = open_page(CARL)
    carl.get_by_role("link", name="Clients").click()
    box = carl.get_by_label("Search clients by name")
    box.fill("Alex")
    expect(carl.locator("#client-results")).to_contain_text("Alex Rivera")
    expect(carl.locator("#client-results")).not_to_contain_text("Casey Morgan")
    expect(carl.locator("#client-search-status")).to_have_text("1 client found.")
    box.fill("nobody-by-this-name")
    box.press("Enter")
    expect(carl.locator("#client-results")).to_contain_text("No clients found for")
    expect(carl.locator("#client-search-status")).to_have_text("0 clients found.")
    assert carl.url.endswith("/clients")
    assert any(u.endswith("/clients/search") for u in watch.requests), watch.requests
    assert not [u for u in watch.requests if "Alex" in u or "nobody" in u or "?q=" in u]
    assert not watch.errors, watch.errors


def test_pm4_a_client_cannot_start_a_conversation_with_a_clinician_pm4_forbids(
    open_page, demo: Demo
):
    alex, watch = open_page("Alex Rivera")
    alex.get_by_role("link", name="New message").click()
    choices = alex.get_by_role("group", name="Who is this message for?")
    expect(choices.get_by_label(re.compile("Carl Chen"))).to_be_visible()  # primary clinician
    expect(choices.get_by_label(re.compile("Priya Patel"))).to_be_visible()  # practice manager
    expect(choices.get_by_label(re.compile("Fiona Ford"))).to_have_count(0)  # not Alex's
    expect(choices.get_by_label(re.compile("Olivia Owens"))).to_have_count(0)

    # The form cannot be bent: a hand-made request naming Fiona is refused like a
    # missing person (PM4, PM7), and no conversation appears.
    token = alex.locator("input[name=csrf_token]").first.get_attribute("value")
    fiona = demo.member_id("fiona@maple.test")
    answer = alex.request.post(
        "/portal/new",
        form={
            "to": f"member:{fiona}",
            "text": "hello Fiona",
            "idempotency_key": uuid.uuid4().hex,
            "csrf_token": token or "",
        },
        headers={"Origin": demo.base},
        max_redirects=0,
    )
    assert answer.status == 404, answer.status
    alex.goto("/portal")
    expect(alex.locator("#conv-list")).not_to_contain_text("Fiona Ford")

    # Starting with the primary clinician works.
    choices = alex.get_by_role("link", name="New message").click()
    alex.get_by_role("group", name="Who is this message for?").get_by_label(
        re.compile("Carl Chen")
    ).check()
    text = unique("A new question for Carl")
    box = composer(alex)
    box.fill(text)
    box.press("Enter")
    expect(alex.locator("#messages")).to_contain_text(text)
    assert watch.errors == []


HOSTILE = (
    '<img src=x onerror="alert(1)"><script>alert(2)</script> '
    "[click](javascript:alert(3)) javascript:alert(4) "
    "\u202egnp.exe\u202c <b>bold</b> https://example.org/path?a=1&b=<2>"
)


def test_ms4_html_script_javascript_links_and_bidi_are_shown_as_text(open_page):
    carl, carl_watch = open_page(CARL)
    alex, alex_watch = open_page("Alex Rivera")
    open_conversation_with(carl, "Alex Rivera")
    alex.get_by_role("link", name=re.compile("Carl Chen")).first.click()
    marker = unique("hostile")
    text = f"{marker} {HOSTILE}"
    box = composer(alex)
    box.fill(text)
    box.press("Enter")
    for page in (carl, alex):  # live on one side, from the sender's send on the other
        body = page.locator("#messages li", has_text=marker).locator(".msg-body")
        expect(body).to_have_count(1)
        assert body.inner_text() == text  # every character shown, as typed
        assert body.locator("img, script, b").count() == 0
        links = body.locator("a")
        expect(links).to_have_count(1)  # only the https link became a link
        assert links.get_attribute("href") == "https://example.org/path?a=1&b="
        assert links.get_attribute("rel") == "noopener noreferrer nofollow"
        page.reload()
        body = page.locator("#messages li", has_text=marker).locator(".msg-body")
        assert body.inner_text() == text
        # The bidi override stays inside the message (isolated), not the page.
        assert body.evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"
    assert carl.evaluate("document.querySelectorAll('a[href^=\"javascript\"]').length") == 0
    assert carl_watch.dialogs == alex_watch.dialogs == []  # no alert() ever ran
    assert carl_watch.errors == alex_watch.errors == []


def test_a_long_conversation_shows_the_newest_and_pages_back(open_page, demo: Demo):
    from confide.domain.actors import Actor, Party, Via
    from confide.services import messaging
    from confide.store.uow import unit_of_work

    carl = Actor(demo.practice_id, Party.member(demo.member_id(CARL)), Via.INTERNAL)
    tag = uuid.uuid4().hex[:6]
    with unit_of_work(demo.runtime.db) as uow:
        sent = messaging.start_conversation(
            uow,
            carl,
            messaging.StartConversation(
                member_ids=(demo.member_id("priya@maple.test"),),
                text=f"long-{tag} 1",
                idempotency_key=f"long-{tag}-1",
            ),
        )
    for i in range(2, 61):
        with unit_of_work(demo.runtime.db) as uow:
            messaging.send_message(
                uow,
                carl,
                messaging.SendMessage(sent.conversation.id, f"long-{tag} {i}", f"long-{tag}-{i}"),
            )
    page, _ = open_page(CARL)
    page.goto(f"/messages/{sent.conversation.id}")
    messages = page.locator("#messages li.msg")
    expect(messages).to_have_count(50)
    expect(messages.last).to_contain_text(f"long-{tag} 60")
    page.get_by_role("button", name="Show older messages").click()
    expect(messages).to_have_count(60)
    expect(messages.first).to_contain_text(f"long-{tag} 1")
    expect(page.get_by_role("button", name="Show older messages")).to_have_count(0)
