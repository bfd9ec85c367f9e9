"""Announcements to clients (AN1, PL2) through the JSON API: who sends to whom, what
clients see in the portal, no replies, the email alert without health information
(NT1), encryption at rest (RC2) and the audit rows (RC1)."""

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from confide.domain.ids import ClientId
from confide.store.tables import AnnouncementRow, AuditRow
from tests.personas import World

MESSAGE_RULES = [("   ", "message_blank"), ("x" * 5001, "message_too_long")]


def canary() -> str:
    return f"PHICANARY-{uuid.uuid4().hex}"


def announce(world: World, who: str, audience: str, text: str) -> Any:
    return world.api(who).post("/api/v1/announcements", json={"audience": audience, "text": text})


def seen_by(world: World, who: str) -> list[dict[str, Any]]:
    r = world.api(who).get("/api/v1/announcements")
    assert r.status_code == 200, r.text
    return list(r.json()["announcements"])


def deactivate_client(world: World, name: str) -> None:
    with world.runtime.write() as uow:
        uow.people.update_client(world.practice_a, ClientId(world.id(name)), active=False)
        uow.commit()


@pytest.mark.parametrize("who", ["olivia", "priya", "pete"])
def test_an1_owner_and_managers_send_to_all_active_clients(who: str, world: World):
    deactivate_client(world, "nora")
    text = canary()
    r = announce(world, who, "all_clients", text)
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["audience"], made["recipients"], made["text"]) == ("all_clients", 3, text)
    assert made["author"]["id"] == world.id(who)
    for client in ("alex", "jordan", "casey"):
        with world.runtime.read() as uow:
            received = uow.announcements.list_for_client(
                world.practice_a, ClientId(world.id(client)), before_id=None, limit=10
            )
        assert [a.id for a in received] == [made["id"]], client
    assert [a["text"] for a in seen_by(world, "alex")] == [text]
    assert [a["text"] for a in seen_by(world, "pat")] == [text]  # jordan's contact
    assert seen_by(world, "zoe") == []  # another practice's client


def test_an1_a_clinician_sends_to_their_own_active_clients_only(world: World):
    text = canary()
    r = announce(world, "carl", "my_clients", text)
    assert r.status_code == 201, r.text
    assert r.json()["recipients"] == 2  # alex and casey: carl is their primary clinician
    assert [a["text"] for a in seen_by(world, "alex")] == [text]
    assert seen_by(world, "jordan") == [] and seen_by(world, "pat") == []
    # The team: carl sees what he sent; the owner and managers see every announcement;
    # another clinician sees none of carl's.
    assert [a["id"] for a in seen_by(world, "carl")] == [r.json()["id"]]
    assert [a["id"] for a in seen_by(world, "priya")] == [r.json()["id"]]
    assert seen_by(world, "betty") == []


@pytest.mark.parametrize("who", ["carl", "fiona", "betty", "sam"])
def test_an1_clinicians_cannot_announce_to_all_clients(who: str, world: World):
    r = announce(world, who, "all_clients", "To everyone")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_permitted")
    assert seen_by(world, "alex") == []


@pytest.mark.parametrize("who", ["bill", "sally", "gus"])
def test_an1_other_team_members_cannot_announce(who: str, world: World):
    for audience in ("all_clients", "my_clients"):
        r = announce(world, who, audience, "Hello")
        assert (r.status_code, r.json()["error"]["code"]) == (403, "not_permitted")


def test_an1_a_clinician_without_active_clients_is_told_so(world: World):
    deactivate_client(world, "jordan")
    r = announce(world, "betty", "my_clients", "Hello")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "no_recipients")
    with world.runtime.read() as uow:
        assert (
            uow.announcements.list_sent(world.practice_a, author_id=None, before_id=None, limit=10)
            == []
        )


def test_pl2_announcements_need_the_plus_plan(world: World):
    with world.runtime.write() as uow:
        uow.practices.update_practice(world.practice_a, plan="essential")
        uow.commit()
    r = announce(world, "olivia", "all_clients", "Hello")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "plan_required")
    assert seen_by(world, "alex") == []


@pytest.mark.parametrize("who", ["alex", "pat"])
def test_an1_clients_cannot_send_or_reply(who: str, world: World):
    made = announce(world, "olivia", "all_clients", "Closed Monday").json()
    r = announce(world, who, "all_clients", "Reply to all")
    assert r.status_code == 404, r.text
    before = world.api(who).get("/api/v1/conversations").json()
    # An announcement is not a conversation: nothing to open or answer.
    r = world.api(who).post(
        f"/api/v1/conversations/{made['id']}/messages",
        json={"text": "thanks", "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 404
    assert world.api(who).get("/api/v1/conversations").json() == before


@pytest.mark.parametrize(("text", "code"), MESSAGE_RULES)
def test_an1_ms1_text_follows_the_message_rules(text: str, code: str, world: World):
    r = announce(world, "olivia", "all_clients", text)
    assert (r.status_code, r.json()["error"]["code"]) == (422, code)


def test_an1_ms2_ms4_emoji_codes_and_plain_text(world: World):
    r = announce(world, "olivia", "all_clients", "Happy holidays :smile: <b>not bold</b>")
    assert r.status_code == 201, r.text
    assert seen_by(world, "alex")[0]["text"] == "Happy holidays 😄 <b>not bold</b>"


def test_an1_bad_audience_is_422(world: World):
    r = world.api("olivia").post(
        "/api/v1/announcements", json={"audience": "everyone", "text": "Hello"}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_input")


# The email alerts (jobs with ids only, sent without health information):
# tests/integration/test_announcement_emails.py.


def test_rc2_announcement_text_is_encrypted_at_rest(world: World):
    text = canary()
    made = announce(world, "olivia", "all_clients", text).json()
    with world.runtime.db.engine.connect() as conn:
        body = conn.execute(
            select(AnnouncementRow.body).where(AnnouncementRow.id == made["id"])
        ).scalar_one()
    assert text.encode() not in body and len(body) > len(text)


def test_rc1_sending_and_viewing_are_audited_without_the_text(world: World):
    text = canary()
    made = announce(world, "priya", "all_clients", text).json()
    seen_by(world, "alex")
    with world.runtime.db.engine.connect() as conn:
        rows = conn.execute(
            select(AuditRow.action, AuditRow.actor_kind, AuditRow.target_kind, AuditRow.meta)
            .where(AuditRow.chain_id == world.practice_a, AuditRow.action.like("announcement%"))
            .order_by(AuditRow.seq)
        ).all()
    assert [(r.action, r.actor_kind, r.target_kind) for r in rows] == [
        ("announcement.sent", "member", "announcement"),
        ("announcements.viewed", "client", "client"),
    ]
    sent = json.loads(rows[0].meta)
    assert (sent["recipients"], sent["audience"]) == (4, "all_clients")
    assert json.loads(rows[1].meta) == {"announcement_ids": [made["id"]]}
    assert all(text not in r.meta for r in rows)
