"""Messaging through the JSON API, as the people of the seeded practices (SPEC PM, MS, EN)."""

import uuid
from datetime import UTC, datetime

import time_machine
from sqlalchemy import func, select

from confide.store.tables import MessageRow, OutboxRow
from tests.personas import World, start


def send(world: World, who: str, conv: int, text: str, key: str | None = None):
    return world.api(who).post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": text, "idempotency_key": key or uuid.uuid4().hex},
    )


def begin(world: World, who: str, **body):
    body.setdefault("text", "Hello")
    body.setdefault("idempotency_key", uuid.uuid4().hex)
    return world.api(who).post("/api/v1/conversations", json=body)


def count_messages(world: World, conv: int) -> int:
    with world.runtime.db.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(MessageRow).where(MessageRow.conversation_id == conv)
        ).scalar_one()


# --- PM1-PM4 ------------------------------------------------------------------------------


def test_pm1_any_two_enabled_members_converse(world: World):
    r = begin(world, "bill", member_ids=[world.id("sally")], text="Invoices are out")
    assert r.status_code == 201, r.text
    conv = r.json()["conversation_id"]
    page = world.api("sally").get(f"/api/v1/conversations/{conv}").json()
    assert [m["text"] for m in page["messages"]] == ["Invoices are out"]
    assert page["conversation"]["client_id"] is None


def test_en2_member_with_box_off_neither_sends_nor_receives(world: World):
    r = begin(world, "carl", member_ids=[world.id("dora")])
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "recipient_messaging_disabled"
    r = begin(world, "dora", member_ids=[world.id("carl")])
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "member_messaging_disabled"


def test_pm2_basic_clinician_reaches_only_assigned_or_granted_clients(world: World):
    assert begin(world, "carl", client_id=world.id("alex")).status_code == 201
    r = begin(world, "carl", client_id=world.id("jordan"))
    assert r.status_code == 404  # jordan is not carl's: as if she did not exist (PM7)
    world.api("olivia").put(f"/api/v1/clients/{world.id('jordan')}/access/{world.id('carl')}")
    assert begin(world, "carl", client_id=world.id("jordan")).status_code == 201


def test_pm3_billers_schedulers_managers_and_owner_reach_any_client(world: World):
    for who in ("bill", "sally", "priya", "olivia"):
        r = begin(world, who, client_id=world.id("jordan"))
        assert r.status_code == 201, (who, r.text)


def test_pm4_client_starts_only_with_allowed_team_members(world: World):
    # carl is alex's primary clinician; sam supervises carl; bill, sally, priya reachable.
    for who in ("carl", "sam", "bill", "sally", "priya"):
        r = begin(world, "alex", member_ids=[world.id(who)])
        assert r.status_code == 201, (who, r.text)
    # fiona has access (full client list) but is not primary: refused, as not found.
    for who in ("fiona", "erin", "olivia", "gus"):
        r = begin(world, "alex", member_ids=[world.id(who)])
        assert r.status_code == 404, (who, r.text)


def test_pm4_recipient_list_for_clients_shows_only_startable_members(world: World):
    r = world.api("alex").get("/api/v1/recipients")
    assert r.status_code == 200
    ids = {p["id"] for p in r.json()["members"]}
    expected = {world.id(n) for n in ("carl", "sam", "bill", "sally", "priya", "pete")}
    assert ids == expected
    assert r.json()["clients"] == []


def test_pm5_client_replies_indefinitely_where_a_member_with_access_started(world: World):
    conv = start(world, "fiona", client="alex").conversation.id  # fiona is not primary
    for i in range(3):
        assert send(world, "alex", conv, f"reply {i}").status_code == 201
    assert count_messages(world, conv) == 4


def test_pm6_a_conversation_never_holds_two_clients(world: World):
    r = begin(world, "olivia", client_id=world.id("alex"), contact_id=world.id("pat"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "contact_not_of_client"


def test_pm6_contact_converses_on_behalf_of_their_client(world: World):
    r = begin(world, "pat", member_ids=[world.id("betty")], text="About Jordan's schedule")
    assert r.status_code == 201, r.text
    conv = r.json()["conversation_id"]
    page = world.api("betty").get(f"/api/v1/conversations/{conv}").json()
    assert page["conversation"]["client_id"] == world.id("jordan")
    kinds = sorted(p["kind"] for p in page["conversation"]["participants"])
    assert kinds == ["contact", "member"]
    # jordan herself is not in pat's conversation.
    assert world.api("jordan").get(f"/api/v1/conversations/{conv}").status_code == 404


def test_pm7_other_practice_never_sees_or_joins(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    missing = world.api("owen").get("/api/v1/conversations/999999999")
    for who in ("owen", "zoe"):
        r = world.api(who).get(f"/api/v1/conversations/{conv}")
        assert r.status_code == 404
        assert r.json() == missing.json()
        assert send(world, who, conv, "hi").status_code == 404
    assert begin(world, "owen", member_ids=[world.id("carl")]).status_code == 404
    assert begin(world, "owen", client_id=world.id("alex")).status_code == 404


def test_pm8_member_answers_in_any_existing_conversation(world: World):
    conv = start(world, "alex", members=("carl", "bill")).conversation.id
    assert send(world, "bill", conv, "Got it").status_code == 201
    assert send(world, "carl", conv, "Thanks").status_code == 201


# --- EN1-EN6 ------------------------------------------------------------------------------


def test_en1_client_switch_needs_team_switch_and_team_off_turns_both_off(world: World):
    api = world.api("olivia")
    r = api.patch("/api/v1/practice/messaging", json={"team_messaging": False})
    assert r.json()["team_messaging"] is False and r.json()["client_messaging"] is False
    r = api.patch("/api/v1/practice/messaging", json={"client_messaging": True})
    assert r.status_code == 403 and r.json()["error"]["code"] == "team_messaging_off"
    r = api.patch(
        "/api/v1/practice/messaging", json={"team_messaging": True, "client_messaging": True}
    )
    assert r.status_code == 200 and r.json()["client_messaging"] is True


def test_en1_practice_settings_only_for_owner_managers_and_entire_practice(world: World):
    for who in ("olivia", "priya", "erin"):
        r = world.api(who).patch("/api/v1/practice/messaging", json={"team_messaging": True})
        assert r.status_code == 200, who
    for who in ("carl", "fiona", "bill", "sally", "sam"):
        r = world.api(who).patch("/api/v1/practice/messaging", json={"team_messaging": False})
        assert r.status_code == 403, who
        assert r.json()["error"]["code"] == "not_permitted"


def test_en4_new_clients_get_messaging_while_auto_allow_is_on(world: World):
    api = world.api("olivia")
    api.patch("/api/v1/practice/messaging", json={"auto_allow_new_clients": True})
    on = api.post("/api/v1/clients", json={"name": "New One"}).json()
    api.patch("/api/v1/practice/messaging", json={"auto_allow_new_clients": False})
    off = api.post("/api/v1/clients", json={"name": "New Two"}).json()
    assert (on["portal_access"], on["messaging_enabled"]) == (True, True)
    assert (off["portal_access"], off["messaging_enabled"]) == (False, False)


def test_en5_starting_with_a_client_whose_messaging_is_off_offers_enabling(world: World):
    r = begin(world, "carl", client_id=world.id("casey"))
    assert r.status_code == 403
    assert r.json()["error"]["code"] in ("client_messaging_off", "no_portal_access")
    r = world.api("carl").post(f"/api/v1/clients/{world.id('casey')}/enable-messaging")
    assert r.status_code == 200 and r.json()["messaging_enabled"] is True
    assert begin(world, "carl", client_id=world.id("casey")).status_code == 201


def test_en5_billers_cannot_enable_a_clients_messaging(world: World):
    r = world.api("bill").post(f"/api/v1/clients/{world.id('casey')}/enable-messaging")
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_permitted"


def test_en6_turning_client_messaging_off_stops_reading_and_keeps_history(world: World):
    conv = start(world, "carl", client="alex", text="Before").conversation.id
    assert world.api("alex").get(f"/api/v1/conversations/{conv}").status_code == 200
    r = world.api("carl").patch(
        f"/api/v1/clients/{world.id('alex')}/portal", json={"messaging_enabled": False}
    )
    assert r.status_code == 200
    assert world.api("alex").get(f"/api/v1/conversations/{conv}").status_code == 404
    assert send(world, "alex", conv, "after").status_code == 404
    assert world.api("alex").get("/api/v1/conversations").json() == {"conversations": []}
    page = world.api("carl").get(f"/api/v1/conversations/{conv}").json()
    assert [m["text"] for m in page["messages"]] == ["Before"]
    assert page["may_reply"] is False and page["reply_refusal"] == "client_messaging_off"
    assert send(world, "carl", conv, "still there?").status_code == 403


def test_en3_practice_client_switch_off_stops_clients(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    world.api("olivia").patch("/api/v1/practice/messaging", json={"client_messaging": False})
    assert world.api("alex").get(f"/api/v1/conversations/{conv}").status_code == 404
    assert begin(world, "alex", member_ids=[world.id("carl")]).status_code == 403


def test_pl1_starter_plan_answers_plan_required(runtime):
    from confide.domain.entities import Plan
    from confide.services import practice
    from confide.store.uow import unit_of_work
    from tests.personas import PASSWORD, anonymous

    with unit_of_work(runtime.db) as uow:
        pid, owner = practice.create_practice(
            uow,
            runtime.passwords,
            name="Starter",
            plan=Plan.STARTER,
            owner_name="Stella",
            owner_email=f"stella.{uuid.uuid4().hex[:8]}@starter.test",
            owner_password=PASSWORD,
        )
    from confide.domain.actors import Actor, Party, Via
    from confide.services import sessions

    with unit_of_work(runtime.db) as uow:
        _id, token = sessions.create_api_token(
            uow, Actor(pid, Party.member(owner), Via.CLI), name="t"
        )
    api = anonymous(runtime)
    api.headers["Authorization"] = f"Bearer {token}"
    for method, path, body in [
        ("PATCH", "/api/v1/practice/messaging", {"team_messaging": True}),
        ("GET", "/api/v1/conversations", None),
        ("GET", "/api/v1/unread", None),
        ("GET", "/api/v1/recipients", None),
        (
            "POST",
            "/api/v1/conversations",
            {"text": "x", "idempotency_key": "k", "member_ids": [owner]},
        ),
    ]:
        r = api.request(method, path, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "plan_required"


# --- MS1, MS2, MS5, MS6, MS7, MS8 ---------------------------------------------------------


def test_ms2_emoji_codes_become_emoji_and_unknown_codes_stay(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    r = send(world, "carl", conv, ":grin: :smile: :thumbsup: :not_a_code:")
    assert r.json()["message"]["text"] == "😁 😄 👍 :not_a_code:"


def test_ms4_markup_is_kept_as_plain_text(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    payload = "<script>alert(1)</script> <b>bold</b> [x](javascript:alert(1))"
    send(world, "carl", conv, payload)
    page = world.api("alex").get(f"/api/v1/conversations/{conv}").json()
    assert page["messages"][-1]["text"] == payload


def test_ms1_limits_over_http(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    assert send(world, "carl", conv, "x" * 5000).status_code == 201
    r = send(world, "carl", conv, "x" * 5001)
    assert r.status_code == 422 and r.json()["error"]["code"] == "message_too_long"
    r = send(world, "carl", conv, " \n\t ")
    assert r.status_code == 422 and r.json()["error"]["code"] == "message_blank"


def test_ms5_same_key_twice_stores_one_message(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    first = send(world, "alex", conv, "once", key="client-key-1")
    again = send(world, "alex", conv, "once", key="client-key-1")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["message"]["id"] == again.json()["message"]["id"]
    assert again.json()["created"] is False
    assert count_messages(world, conv) == 2


def test_ms5_a_retry_takes_no_sequence_number(world: World):
    """The retry's insert finds the key taken and undoes its share (the sequence number
    it drew): the next message follows without a gap."""
    conv = start(world, "carl", client="alex").conversation.id
    first = send(world, "alex", conv, "once", key="client-key-2").json()["message"]
    for _ in range(3):
        assert send(world, "alex", conv, "once", key="client-key-2").status_code == 200
    after = send(world, "alex", conv, "next", key="client-key-3")
    assert after.status_code == 201 and after.json()["message"]["seq"] == first["seq"] + 1
    assert count_messages(world, conv) == 3


def test_ms5_a_retry_after_replies_were_switched_off_gets_the_stored_message(world: World):
    """Carl may still read the conversation once client messaging is off (EN1), not
    write in it: a retry of what he sent before gets its answer, a new message not."""
    conv = start(world, "carl", client="alex").conversation.id
    first = send(world, "carl", conv, "sent before", key="member-key-4")
    assert first.status_code == 201
    r = world.api("olivia").patch("/api/v1/practice/messaging", json={"client_messaging": False})
    assert r.status_code == 200
    refused = send(world, "carl", conv, "a new one", key="member-key-5")
    assert refused.status_code == 403
    again = send(world, "carl", conv, "sent before", key="member-key-4")
    assert again.status_code == 200
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert count_messages(world, conv) == 2


def test_ms5_key_reused_for_another_conversation_is_a_conflict(world: World):
    a = start(world, "carl", client="alex").conversation.id
    b = start(world, "carl", members=("bill",)).conversation.id
    assert send(world, "carl", a, "one", key="k-same").status_code == 201
    r = send(world, "carl", b, "two", key="k-same")
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused"


def test_ms6_sender_removes_and_both_sides_see_it_removed(world: World):
    conv = start(world, "carl", client="alex", text="secret words").conversation.id
    page = world.api("carl").get(f"/api/v1/conversations/{conv}").json()
    mid = page["messages"][0]["id"]
    assert (
        world.api("alex").delete(f"/api/v1/conversations/{conv}/messages/{mid}").status_code == 403
    )
    r = world.api("carl").delete(f"/api/v1/conversations/{conv}/messages/{mid}")
    assert r.status_code == 200 and r.json()["removed"] is True and r.json()["text"] is None
    for who in ("carl", "alex"):
        res = world.api(who).get(f"/api/v1/conversations/{conv}")
        assert "secret words" not in res.text
        assert res.json()["messages"][0]["removed"] is True
    again = world.api("carl").delete(f"/api/v1/conversations/{conv}/messages/{mid}")
    assert again.status_code == 403 and again.json()["error"]["code"] == "already_removed"


def test_ms6_removed_text_stays_in_the_record(world: World):
    """RC3: removal hides; the record keeps the text for transcripts and exports."""
    from confide.domain.ids import ConversationId
    from confide.store.uow import unit_of_work

    sent = start(world, "carl", client="alex", text="kept for the record")
    world.api("carl").delete(
        f"/api/v1/conversations/{sent.conversation.id}/messages/{sent.message.id}"
    )
    with unit_of_work(world.runtime.db, write=False) as uow:
        [msg] = uow.conversations.list_messages(
            world.practice_a,
            ConversationId(sent.conversation.id),
            before_seq=None,
            limit=5,
            reveal_removed=True,
        )
    assert msg.text == "kept for the record" and msg.removed_by == world.parties["carl"]


def test_ms7_unread_counts_and_opening_reads(world: World):
    conv = start(world, "carl", client="alex", text="one").conversation.id
    send(world, "carl", conv, "two")
    assert world.api("alex").get("/api/v1/unread").json() == {"unread": 2}
    listing = world.api("alex").get("/api/v1/conversations").json()["conversations"]
    assert [(c["id"], c["unread"]) for c in listing] == [(conv, 2)]
    world.api("alex").get(f"/api/v1/conversations/{conv}")
    assert world.api("alex").get("/api/v1/unread").json() == {"unread": 0}
    assert world.api("carl").get("/api/v1/unread").json() == {"unread": 0}  # own messages


def test_ms7_removed_messages_do_not_count_as_unread(world: World):
    sent = start(world, "carl", client="alex", text="oops")
    world.api("carl").delete(
        f"/api/v1/conversations/{sent.conversation.id}/messages/{sent.message.id}"
    )
    assert world.api("alex").get("/api/v1/unread").json() == {"unread": 0}


def test_ms7_mark_read_up_to_a_position(world: World):
    conv = start(world, "carl", client="alex", text="1").conversation.id
    send(world, "carl", conv, "2")
    send(world, "carl", conv, "3")
    r = world.api("alex").post(f"/api/v1/conversations/{conv}/read", json={"seq": 2})
    assert r.json() == {"unread": 1}
    r = world.api("alex").post(f"/api/v1/conversations/{conv}/read", json={"seq": 1})
    assert r.json() == {"unread": 1}  # never moves back


def test_ms8_list_latest_activity_first(world: World):
    first = start(world, "carl", client="alex").conversation.id
    second = start(world, "carl", members=("bill",)).conversation.id
    send(world, "carl", first, "newer")
    ids = [c["id"] for c in world.api("carl").get("/api/v1/conversations").json()["conversations"]]
    assert ids[:2] == [first, second]


def test_ms8_new_message_lists_recent_people_and_searches_by_name(world: World):
    start(world, "carl", client="alex")
    start(world, "carl", members=("bill",))
    r = world.api("carl").get("/api/v1/recipients").json()
    assert [p["id"] for p in r["recent"]][:2] == [world.id("bill"), world.id("alex")]
    r = world.api("carl").post("/api/v1/recipients/search", json={"q": "jor"}).json()
    assert r["clients"] == []  # carl has no access to jordan
    r = world.api("bill").post("/api/v1/recipients/search", json={"q": "jor"}).json()
    assert [c["name"] for c in r["clients"]] == ["Jordan Client"]
    r = world.api("carl").post("/api/v1/recipients/search", json={"q": "sal"}).json()
    assert [m["id"] for m in r["members"]] == [world.id("sally")]


def test_ms8_recent_list_forgets_clients_after_access_ends(world: World):
    world.api("olivia").put(f"/api/v1/clients/{world.id('jordan')}/access/{world.id('carl')}")
    start(world, "carl", client="jordan")
    assert world.id("jordan") in [
        p["id"] for p in world.api("carl").get("/api/v1/recipients").json()["recent"]
    ]
    world.api("olivia").delete(f"/api/v1/clients/{world.id('jordan')}/access/{world.id('carl')}")
    recent = world.api("carl").get("/api/v1/recipients").json()["recent"]
    assert world.id("jordan") not in [p["id"] for p in recent if p["kind"] == "client"]
    assert world.api("carl").get("/api/v1/conversations").json()["conversations"] == []


def test_ms8_the_list_fills_its_page_past_conversations_the_member_can_no_longer_open(
    world: World,
):
    """A page of the list holds `limit` conversations the member can open: those about a
    client the member no longer has access to are passed over, not counted. (Counted,
    a clinician whose newest conversations were with clients moved to a colleague saw
    a short list, or none.) Conversations active at the same instant are all kept,
    newest id first."""
    jordan, carl = world.id("jordan"), world.id("carl")
    with time_machine.travel(datetime(2026, 11, 28, 12, 0, tzinfo=UTC), tick=False):
        older = start(world, "carl", members=("bill",)).conversation.id
        old = start(world, "carl", members=("sally",)).conversation.id
        world.api("olivia").put(f"/api/v1/clients/{jordan}/access/{carl}")
        closed = start(world, "carl", client="jordan").conversation.id
    world.api("olivia").delete(f"/api/v1/clients/{jordan}/access/{carl}")
    assert closed > old > older  # all three at 12:00: by id, jordan's first
    for limit, expected in [(1, [old]), (2, [old, older]), (3, [old, older])]:
        r = world.api("carl").get(f"/api/v1/conversations?limit={limit}")
        assert [c["id"] for c in r.json()["conversations"]] == expected, limit


def test_ms8_the_member_search_fills_its_limit_past_those_left_out(world: World):
    """The "New message" lists hold `limit` people when there are that many: those left
    out (oneself, a member whose messaging box is off) are passed over, not counted."""
    # By name, "a" finds Carl (oneself), Dora (messaging off), then Fiona.
    r = world.api("carl").post("/api/v1/recipients/search", json={"q": "a", "limit": 1})
    assert [m["id"] for m in r.json()["members"]] == [world.id("fiona")]


def test_ms8_recently_messaged_fills_its_limit_past_clients_out_of_reach(world: World):
    """Clients whose access ended are left out of "recently messaged" (not even the
    name, PM2) and passed over, not counted."""
    carl = world.id("carl")
    start(world, "carl", members=("bill",))
    for client in ("jordan", "nora"):  # newer than bill, then out of carl's reach
        world.api("olivia").put(f"/api/v1/clients/{world.id(client)}/access/{carl}")
        start(world, "carl", client=client)
        world.api("olivia").delete(f"/api/v1/clients/{world.id(client)}/access/{carl}")
    recent = world.api("carl").get("/api/v1/recipients?limit=1").json()["recent"]
    assert [(p["kind"], p["id"]) for p in recent] == [("member", world.id("bill"))]


# --- AW1, AW2 -----------------------------------------------------------------------------


def test_aw1_away_shows_next_to_the_name_in_conversations(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    r = world.api("carl").put("/api/v1/me/away", json={"on": True})
    assert r.status_code == 200 and r.json()["away"] is True
    page = world.api("alex").get(f"/api/v1/conversations/{conv}").json()
    carl = next(p for p in page["conversation"]["participants"] if p["kind"] == "member")
    assert carl["away"] is True and carl["away_text"]
    assert world.api("carl").get("/api/v1/me").json()["away"] is True
    # AW3: messages are still delivered while away.
    assert send(world, "alex", conv, "are you there?").status_code == 201


def test_aw2_away_text_is_customised_up_to_600_characters(world: World):
    api = world.api("carl")
    r = api.put("/api/v1/me/away", json={"text": "Back Monday :wave:", "on": True})
    assert r.status_code == 200
    assert api.get("/api/v1/me").json()["away_text"] == "Back Monday 👋"
    r = api.put("/api/v1/me/away", json={"text": "x" * 601})
    assert r.status_code == 422 and r.json()["error"]["code"] == "away_text_too_long"


# --- outbox -------------------------------------------------------------------------------


def test_outbox_rows_are_written_with_the_message_and_hold_ids_only(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    marker = f"PHICANARY-{uuid.uuid4()}"
    send(world, "carl", conv, marker)
    with world.runtime.db.engine.connect() as conn:
        rows = conn.execute(
            select(OutboxRow.kind, OutboxRow.payload).where(
                OutboxRow.practice_id == world.practice_a
            )
        ).all()
    kinds = [k for k, _ in rows]
    assert kinds.count("message.created") == 2
    assert all(marker not in p for _, p in rows)
