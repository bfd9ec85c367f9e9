"""The records pages of the web app: transcripts and chart notes on the client's record
(TR1-TR3), Settings > Data export (EX1, EX3, EX4), announcements (AN1) and Settings >
Audit log (RC1). Who may open each page is in test_pages.py's tables; here, what the
pages show and do, and that a transcript page follows access to the client exactly as
the JSON API does (the same service calls)."""

import csv
import html
import io
import re
import uuid

import pytest
import pyzipper  # type: ignore[import-untyped]
from fastapi import FastAPI
from sqlalchemy import select

from confide.jobs import exports as export_jobs
from confide.runtime import Runtime
from confide.services import messaging
from confide.store.tables import AuditRow
from confide.store.uow import unit_of_work
from confide.web.app import create_app
from tests.integration.test_pages import Browser, _csrf_of
from tests.personas import MEMBERS_A, World, start

CLIENTS = ("alex", "jordan", "nora")


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


def canary() -> str:
    return f"PHICANARY-{uuid.uuid4().hex[:16]}"


def send(world: World, who: str, conv: int, text: str) -> int:
    with unit_of_work(world.runtime.db) as uow:
        sent = messaging.send_message(
            uow, world.actor(who), messaging.SendMessage(conv, text, uuid.uuid4().hex)
        )
    return int(sent.message.id)


def remove(world: World, who: str, conv: int, message_id: int) -> None:
    with unit_of_work(world.runtime.db) as uow:
        messaging.remove_message(uow, world.actor(who), conv, message_id)


def audit_count(world: World, action: str) -> int:
    with world.runtime.db.engine.connect() as conn:
        return len(
            conn.execute(
                select(AuditRow.seq).where(
                    AuditRow.chain_id == world.practice_a, AuditRow.action == action
                )
            ).all()
        )


# --- TR1-TR3: transcripts -----------------------------------------------------------------


def test_tr1_transcript_page_follows_access_to_the_client_exactly_like_the_api(
    app: FastAPI, world: World
):
    """Every member of practice A, owen of practice B, a client and a contact, for every
    client of practice A: the page opens exactly when the API's transcript answers 200,
    and otherwise answers like a client that does not exist (PM7)."""
    c = canary()
    start(world, "carl", client="alex", text=f"{c} alex")
    start(world, "betty", client="jordan", contact="pat", text=f"{c} jordan")
    start(world, "olivia", client="nora", text=f"{c} nora")
    actors = (*MEMBERS_A, "olivia", "owen", "alex", "pat")
    seen = 0
    for who in actors:
        browser = Browser(app, world, who)
        for client in CLIENTS:
            api = world.api(who).get(f"/api/v1/clients/{world.id(client)}/transcript")
            page = browser.http.get(f"/clients/{world.id(client)}/transcript")
            assert (page.status_code == 200) == (api.status_code == 200), (who, client)
            if page.status_code == 200:
                seen += 1
                assert f"{c} {client}" in html.unescape(page.text)
            else:
                missing = browser.http.get("/clients/999999999/transcript")
                assert (page.status_code, page.text) == (missing.status_code, missing.text)
                assert c not in page.text
        browser.http.close()
    assert seen >= 10  # the matrix is not empty: owner, managers, clinicians with access


def test_tr1_tr3_transcript_shows_the_conversation_in_order_removed_marked_team_never(
    app: FastAPI, world: World
):
    c = canary()
    conv = start(world, "carl", client="alex", text=f"{c} one").conversation.id
    send(world, "alex", conv, f"{c} two <b>bold</b>")
    gone = send(world, "carl", conv, f"{c} three removed")
    remove(world, "carl", conv, gone)
    send(world, "carl", conv, f"{c} four")
    start(world, "carl", members=("sam",), text=f"{c} team only about alex")
    before = audit_count(world, "transcript.viewed")
    page = Browser(app, world, "carl").http.get(f"/clients/{world.id('alex')}/transcript")
    assert page.status_code == 200
    text = html.unescape(page.text)
    positions = [text.index(f"{c} {w}") for w in ("one", "two", "three removed", "four")]
    assert positions == sorted(positions)
    assert "<b>bold</b>" not in page.text and "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert re.search(r"Removed by <bdi>Carl Test</bdi>", page.text)
    assert "team only" not in text  # TR3
    assert audit_count(world, "transcript.viewed") == before + 1  # RC1


def test_tr1_choosing_participants_and_paging(app: FastAPI, world: World):
    c = canary()
    alex = start(world, "carl", client="alex", text=f"{c} carl-alex 0").conversation.id
    for i in range(1, 105):
        send(world, "carl", alex, f"{c} carl-alex {i}")
    start(world, "sam", client="alex", text=f"{c} sam-alex")
    carl = Browser(app, world, "carl")
    url = f"/clients/{world.id('alex')}/transcript"
    first = carl.http.get(url)
    assert first.status_code == 200
    assert f"{c} carl-alex 99<" in first.text and f"{c} carl-alex 100<" not in first.text
    nxt = re.search(r'href="(/clients/\d+/transcript\?after=[^"]+)">Next page', first.text)
    assert nxt, first.text[-2000:]
    second = carl.http.get(html.unescape(nxt.group(1)))
    assert f"{c} carl-alex 104<" in second.text and f"{c} sam-alex" in second.text
    assert f"{c} carl-alex 99<" not in second.text and "First page" in second.text
    # Only the conversations in which sam takes part.
    sam = carl.http.get(url, params={"p": f"member:{world.id('sam')}"})
    assert f"{c} sam-alex" in sam.text and f"{c} carl-alex 0<" not in sam.text
    assert f'value="member:{world.id("sam")}" checked' in sam.text
    bad = carl.http.get(url, params={"p": "member:x"})
    assert bad.status_code == 422 and "participants" in bad.text
    huge = carl.http.get(url, params={"p": "member:" + "9" * 5000})
    assert huge.status_code == 422


# --- TR2: copy to chart note ------------------------------------------------------------------


def test_tr2_ticked_messages_become_a_chart_note_on_the_record(app: FastAPI, world: World):
    c = canary()
    conv = start(world, "carl", client="alex", text=f"{c} keep me").conversation.id
    other = send(world, "alex", conv, f"{c} not this one")
    gone = send(world, "carl", conv, f"{c} removed but kept")
    remove(world, "carl", conv, gone)
    carl = Browser(app, world, "carl")
    page = carl.http.get(f"/clients/{world.id('alex')}/transcript")
    ids = [int(x) for x in re.findall(r'name="message_id" value="(\d+)"', page.text)]
    assert len(ids) == 3 and other in ids
    r = carl.http.post(
        f"/clients/{world.id('alex')}/chart-notes",
        data={"csrf_token": _csrf_of(page.text), "message_id": [ids[0], gone]},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert re.fullmatch(
        rf"/clients/{world.id('alex')}\?noted=\d+#chart-notes", r.headers["location"]
    )
    record = carl.http.get(r.headers["location"].split("#")[0]).text
    notes = html.unescape(record[record.index('id="chart-notes"') :])
    assert "Chart note saved." in notes
    assert f"{c} keep me" in notes and f"{c} removed but kept" in notes
    assert f"{c} not this one" not in notes
    assert "Removed by" in notes and "copied by" in notes
    # Nothing ticked: a clear 422 on the page, no note.
    none = carl.http.post(
        f"/clients/{world.id('alex')}/chart-notes",
        data={"csrf_token": _csrf_of(page.text)},
        follow_redirects=False,
    )
    assert none.status_code == 422 and "Choose between 1 and 200 messages" in none.text
    assert audit_count(world, "chart_note.created") == 1


def test_tr2_a_biller_reads_transcripts_without_copying(app: FastAPI, world: World):
    c = canary()
    sent = start(world, "carl", client="alex", text=f"{c} for the record")
    bill = Browser(app, world, "bill")
    page = bill.http.get(f"/clients/{world.id('alex')}/transcript")
    assert page.status_code == 200 and f"{c} for the record" in page.text
    assert 'name="message_id"' not in page.text and "Copy to chart note" not in page.text
    r = bill.http.post(
        f"/clients/{world.id('alex')}/chart-notes",
        data={"csrf_token": _csrf_of(page.text), "message_id": sent.message.id},
        follow_redirects=False,
    )
    assert r.status_code == 403


def test_tr2_another_clients_message_cannot_be_copied(app: FastAPI, world: World):
    jordan = start(world, "betty", client="jordan", text="Jordan's message")
    olivia = Browser(app, world, "olivia")
    token = olivia.token()
    r = olivia.http.post(
        f"/clients/{world.id('alex')}/chart-notes",
        data={"csrf_token": token, "message_id": jordan.message.id},
        follow_redirects=False,
    )
    assert r.status_code == 404


# --- EX1, EX3, EX4: the data export page --------------------------------------------------------


def test_ex3_the_password_is_shown_once_to_its_maker(app: FastAPI, world: World):
    priya = Browser(app, world, "priya")
    page = priya.http.get("/settings/export")
    assert page.status_code == 200
    assert 'name="protect" value="on" checked' in page.text  # EX3: on by default
    made = priya.http.post(
        "/settings/export",
        data={"csrf_token": _csrf_of(page.text), "scope": "practice", "protect": "on"},
        follow_redirects=False,
    )
    assert made.status_code == 200
    found = re.search(r'id="export-password" class="secret" type="text" value="([^"]+)"', made.text)
    assert found, made.text
    password = found.group(1)
    assert len(password) >= 22 and 'data-copy="export-password"' in made.text
    assert "Queued" in made.text and 'hx-trigger="every 2s"' in made.text  # EX4 polling
    # Never again: not on the page, not in the list, not for the other exporter.
    assert password not in priya.http.get("/settings/export").text
    assert password not in priya.http.get("/settings/export/list").text
    assert password not in Browser(app, world, "olivia").http.get("/settings/export").text
    export_id = int(re.search(r'id="export-(\d+)"', made.text).group(1))  # type: ignore[union-attr]
    assert (
        export_jobs.run_next_export(
            world.runtime.db, export_dir=world.runtime.settings.resolved_export_dir, only=export_id
        )
        == "ready"
    )
    listed = priya.http.get("/settings/export/list").text
    assert "Ready" in listed and "hx-trigger" not in listed  # polling stops
    link = f"/settings/export/{export_id}/download"
    assert f'href="{link}"' in listed
    before = audit_count(world, "export.downloaded")
    data = priya.http.get(link)
    assert data.status_code == 200 and data.headers["content-type"] == "application/zip"
    assert data.headers["cache-control"] == "no-store"
    with pyzipper.AESZipFile(io.BytesIO(data.content)) as zf:
        zf.setpassword(password.encode())
        assert "index.txt" in zf.namelist() and zf.read("index.txt")
    assert audit_count(world, "export.downloaded") == before + 1
    # EX1: the download needs export permission as well as a session.
    assert Browser(app, world, "pete").http.get(link).status_code == 403
    assert Browser(app, world, "carl").http.get(link).status_code == 403


def test_ex3_without_a_password_the_page_warns(app: FastAPI, world: World):
    olivia = Browser(app, world, "olivia")
    token = olivia.token()
    made = olivia.http.post(
        "/settings/export",
        data={"csrf_token": token, "scope": "clinician", "clinician_id": world.id("carl")},
        follow_redirects=False,
    )
    assert made.status_code == 200
    assert "not password-protected" in made.text and 'id="export-password"' not in made.text
    assert "Clients of Carl Test" in made.text
    assert audit_count(world, "export.password_waived") == 1


def test_ex4_failed_export_shows_its_reason_and_delete_cancels(app: FastAPI, world: World):
    priya = Browser(app, world, "priya")
    token = priya.token()
    priya.http.post("/settings/export", data={"csrf_token": token, "protect": "on"})
    page = priya.http.get("/settings/export").text
    export_id = int(re.search(r'id="export-(\d+)"', page).group(1))  # type: ignore[union-attr]
    with world.runtime.write() as uow:
        uow.exports.mark_failed(world.practice_a, export_id, error="storage_error")
        uow.commit()
    page = priya.http.get("/settings/export").text
    assert "Failed" in page and "storage_error" in page
    r = priya.http.post(
        "/settings/export",
        data={"csrf_token": token, "scope": "clinician", "clinician_id": world.id("priya")},
    )
    assert r.status_code == 422 and "not a clinician" in r.text
    priya.http.post("/settings/export", data={"csrf_token": token, "protect": "on"})
    newest = int(re.search(r'id="export-(\d+)"', priya.http.get("/settings/export").text).group(1))  # type: ignore[union-attr]
    r = priya.http.post(
        f"/settings/export/{newest}/delete", data={"csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    assert "Deleted" in priya.http.get("/settings/export").text


# --- AN1: announcements --------------------------------------------------------------------------


def test_an1_announcement_from_the_page_reaches_the_portal(app: FastAPI, world: World):
    c = canary()
    carl = Browser(app, world, "carl")
    page = carl.http.get("/announcements")
    assert 'value="my_clients"' in page.text and 'value="all_clients"' not in page.text
    r = carl.http.post(
        "/announcements",
        data={"csrf_token": _csrf_of(page.text), "audience": "my_clients", "text": f"{c} <i>"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/announcements?sent=1"
    sent = carl.http.get("/announcements?sent=1").text
    assert "Announcement sent." in sent and f"{c} &lt;i&gt;" in sent
    alex = Browser(app, world, "alex").http.get("/portal/announcements")
    assert alex.status_code == 200 and f"{c} &lt;i&gt;" in alex.text
    assert "<textarea" not in alex.text  # no reply
    jordan = Browser(app, world, "jordan").http.get("/portal/announcements")
    assert c not in jordan.text  # not one of carl's clients
    refused = carl.http.post(
        "/announcements",
        data={"csrf_token": _csrf_of(page.text), "audience": "all_clients", "text": "all"},
    )
    assert refused.status_code == 403


def test_an1_blank_announcement_is_refused_readably(app: FastAPI, world: World):
    olivia = Browser(app, world, "olivia")
    page = olivia.http.get("/announcements")
    assert 'value="all_clients"' in page.text
    r = olivia.http.post(
        "/announcements",
        data={"csrf_token": _csrf_of(page.text), "audience": "all_clients", "text": "   "},
    )
    assert r.status_code == 422 and "<html" in r.text


# --- RC1: the audit log page ----------------------------------------------------------------------


def test_rc1_audit_log_page_filters_pages_and_links_the_csv(app: FastAPI, world: World):
    for i in range(3):
        start(world, "carl", client="alex", text=f"audit {i}")
    olivia = Browser(app, world, "olivia")
    page = olivia.http.get("/settings/audit")
    assert page.status_code == 200 and "message.sent" in page.text
    carl = f"member:{world.id('carl')}"
    mine = olivia.http.get("/settings/audit", params={"who": carl, "action": "conversation."})
    rows = re.findall(r"<code class=\"action\">([a-z_.]+)</code>", mine.text)
    assert rows and all(r.startswith("conversation.") for r in rows)
    assert f'<option value="{carl}" selected>' in mine.text
    # The CSV link carries the same filters and answers with the same rows.
    link = re.search(r'href="(/api/v1/audit\.csv[^"]*)"', mine.text)
    assert link and "actor=member" in link.group(1)
    got = olivia.http.get(html.unescape(link.group(1)))
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(got.text)))
    assert lines[0][0] == "seq" and len(lines) > 1
    assert {row[8].split(".")[0] for row in lines[1:]} == {"conversation"}
    # Dates: whole UTC days; a range with nothing in it; a bad date.
    empty = olivia.http.get("/settings/audit", params={"from": "2001-01-01", "to": "2001-01-02"})
    assert "No entries match these filters." in empty.text
    bad = olivia.http.get("/settings/audit", params={"from": "yesterday"})
    assert bad.status_code == 422 and "a date such as" in bad.text
    bad_actor = olivia.http.get("/settings/audit", params={"who": "someone"})
    assert bad_actor.status_code == 422


def test_rc1_audit_log_page_pages_back_without_repeating(app: FastAPI, world: World):
    conv = start(world, "carl", client="alex", text="page").conversation.id
    for i in range(55):
        send(world, "carl", conv, f"page {i}")
    olivia = Browser(app, world, "olivia")
    first = olivia.http.get("/settings/audit", params={"action": "message.sent"})
    older = re.search(r'href="(/settings/audit\?[^"]*before=\d+)">Older entries', first.text)
    assert older, "a second page"
    second = olivia.http.get(html.unescape(older.group(1)))
    assert second.status_code == 200 and "Newest" in second.text
    seqs = lambda t: re.findall(r"<td class=\"when\">", t)  # noqa: E731
    assert len(seqs(first.text)) == 50 and 0 < len(seqs(second.text)) <= 50
