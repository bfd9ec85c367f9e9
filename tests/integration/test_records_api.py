"""The practice's records through the JSON API: transcripts (TR1, TR3) and chart notes
(TR2), with removed messages kept (MS6, RC3), audit (RC1) and encryption at rest (RC2)."""

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, update

from confide.runtime import Runtime, build_runtime
from confide.store import migrate
from confide.store.db import make_engine
from confide.store.tables import AuditRow, Base, ChartNoteRow
from tests.conftest import make_settings
from tests.personas import World, build_world, start

ON_POSTGRES = os.environ.get("CONFIDE_TEST_DATABASE") == "postgres"
MISSING = 999_999_999

# "Access to a client" (SPEC; docs/policy.md), for the seeded personas.
EVERY_CLIENT = ("olivia", "priya", "pete", "fiona", "erin", "bill", "sally")
ACCESS = {
    "alex": {*EVERY_CLIENT, "carl", "sam"},  # carl primary, sam supervises carl
    "jordan": {*EVERY_CLIENT, "betty"},  # betty primary; pat is jordan's contact
}
STAFF_A = (
    "olivia",
    *("priya", "pete", "carl", "fiona", "erin", "betty", "sam", "gus", "bill", "sally", "dora"),
)
EVERYONE = (*STAFF_A, "alex", "pat", "owen", "zoe")


def canary() -> str:
    return f"PHICANARY-{uuid.uuid4()}"


def send(world: World, who: str, conv: int, text: str) -> dict[str, Any]:
    r = world.api(who).post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": text, "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    return r.json()["message"]


def remove(world: World, who: str, conv: int, message_id: int) -> None:
    r = world.api(who).delete(f"/api/v1/conversations/{conv}/messages/{message_id}")
    assert r.status_code == 200, r.text


def transcript(world: World, who: str, client: str | int, query: str = "") -> Any:
    cid = client if isinstance(client, int) else world.id(client)
    return world.api(who).get(f"/api/v1/clients/{cid}/transcript{query}")


def copy(world: World, who: str, client: str | int, message_ids: list[int]) -> Any:
    cid = client if isinstance(client, int) else world.id(client)
    return world.api(who).post(
        f"/api/v1/clients/{cid}/chart-notes", json={"message_ids": message_ids}
    )


def audit_rows(world: World, after_id: int) -> list[dict[str, Any]]:
    with world.runtime.db.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(AuditRow.__table__)
                .where(AuditRow.chain_id == world.practice_a, AuditRow.id > after_id)
                .order_by(AuditRow.seq)
            )
        ]


def last_audit_id(world: World) -> int:
    with world.runtime.db.engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(AuditRow.id), 0))).scalar_one()


# --- a module world: conversations of every kind -------------------------------------------


class Scene:
    def __init__(self, world: World) -> None:
        self.world = world
        self.texts = {k: canary() for k in ("alex", "jordan", "pat", "team", "removed")}
        carl_alex = start(world, "carl", client="alex", text=self.texts["alex"])
        self.conv_alex = carl_alex.conversation.id
        self.msg_alex = carl_alex.message.id
        self.removed = send(world, "carl", self.conv_alex, self.texts["removed"])["id"]
        remove(world, "carl", self.conv_alex, self.removed)
        jordan = start(world, "betty", client="jordan", text=self.texts["jordan"])
        self.conv_jordan, self.msg_jordan = jordan.conversation.id, jordan.message.id
        pat = start(world, "betty", client="jordan", contact="pat", text=self.texts["pat"])
        self.conv_pat = pat.conversation.id
        team = start(world, "carl", members=("erin",), text=self.texts["team"])
        self.conv_team, self.msg_team = team.conversation.id, team.message.id


@pytest.fixture(scope="module")
def scene(runtime: Runtime) -> Scene:
    return Scene(build_world(runtime))


# --- TR1: visibility follows access to the client, exactly ---------------------------------


@pytest.mark.parametrize("actor", EVERYONE)
def test_tr1_transcript_visibility_follows_access_to_the_client(actor: str, scene: Scene):
    """A matrix over the personas: with access, the transcript; without (another
    practice, a client or contact, a member without access), the same 404 as a client
    that does not exist (PM7). Carl sees alex's, not jordan's; the biller sees both."""
    w = scene.world
    missing = transcript(w, actor, MISSING)
    assert missing.status_code == 404
    for client, who in ACCESS.items():
        r = transcript(w, actor, client)
        if actor in who:
            assert r.status_code == 200, (client, r.text)
            assert r.json()["client_id"] == w.id(client)
        else:
            assert (r.status_code, r.json()) == (404, missing.json()), client
            assert scene.texts[client] not in r.text
        notes = w.api(actor).get(f"/api/v1/clients/{w.id(client)}/chart-notes")
        assert notes.status_code == (200 if actor in who else 404), (client, notes.text)


def test_tr1_carl_sees_alex_not_jordan_and_the_biller_sees_both(scene: Scene):
    w = scene.world
    alex = transcript(w, "carl", "alex").json()
    assert [c["id"] for c in alex["conversations"]] == [scene.conv_alex]
    assert scene.texts["alex"] in {m["text"] for m in alex["messages"]}
    assert transcript(w, "carl", "jordan").status_code == 404
    jordan = transcript(w, "bill", "jordan").json()
    assert [c["id"] for c in jordan["conversations"]] == [scene.conv_jordan, scene.conv_pat]
    assert transcript(w, "bill", "alex").status_code == 200


def test_tr1_a_contacts_conversations_are_in_their_clients_transcript(scene: Scene):
    w = scene.world
    t = transcript(w, "betty", "jordan").json()
    texts = [m["text"] for m in t["messages"]]
    assert texts == [scene.texts["jordan"], scene.texts["pat"]]  # by conversation, then seq
    people = {(p["kind"], p["id"]) for p in t["participants"]}
    assert people == {
        ("client", w.id("jordan")),
        ("contact", w.id("pat")),
        ("member", w.id("betty")),
    }
    # the client side comes first, then the team
    assert [p["kind"] for p in t["participants"]] == ["client", "contact", "member"]
    pat = next(p for p in t["participants"] if p["kind"] == "contact")
    assert (pat["name"], pat["label"]) == ("Pat Parent", "Contact (Parent)")


# --- TR3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["olivia", "carl", "erin", "bill"])
def test_tr3_team_only_conversations_never_appear_in_a_transcript(actor: str, scene: Scene):
    """Carl and erin have a team-only conversation; it is in no client's transcript,
    whoever looks, however the participants are chosen."""
    w = scene.world
    for query in (
        "",
        f"?participants=member:{w.id('carl')}",
        f"?participants=member:{w.id('erin')}",
    ):
        r = transcript(w, actor, "alex", query)
        assert r.status_code == 200, r.text
        assert scene.conv_team not in {c["id"] for c in r.json()["conversations"]}
        assert scene.conv_team not in {m["conversation_id"] for m in r.json()["messages"]}
        assert scene.texts["team"] not in r.text


def test_tr3_team_messages_cannot_be_copied_into_a_chart_note(scene: Scene):
    w = scene.world
    missing = copy(w, "olivia", "alex", [MISSING])
    assert missing.status_code == 404
    for other in (scene.msg_team, scene.msg_jordan):  # team-only; another client's
        r = copy(w, "olivia", "alex", [other])
        assert (r.status_code, r.json()) == (404, missing.json())
        r = copy(w, "olivia", "alex", [scene.msg_alex, other])  # one bad id spoils all
        assert (r.status_code, r.json()) == (404, missing.json())
        assert scene.texts["team"] not in r.text


# --- MS6 / RC3: removed messages are in the record ---------------------------------------------


def test_ms6_rc3_removed_messages_are_in_the_transcript_with_text_and_marked(scene: Scene):
    w = scene.world
    t = transcript(w, "sam", "alex").json()
    by_id = {m["id"]: m for m in t["messages"]}
    removed = by_id[scene.removed]
    assert removed["text"] == scene.texts["removed"]
    assert removed["removed"] is True
    assert removed["removed_at"] is not None
    assert removed["removed_by"]["kind"] == "member"
    assert removed["removed_by"]["id"] == w.id("carl")
    assert removed["removed_by"]["name"] == "Carl Test"
    assert removed["sender"]["name"] == "Carl Test"
    assert removed["sender"]["label"] == "Clinician"
    kept = by_id[scene.msg_alex]
    assert (kept["removed"], kept["removed_by"], kept["removed_at"]) == (False, None, None)
    # the control: the conversation itself no longer shows the text (MS6)
    page = w.api("carl").get(f"/api/v1/conversations/{scene.conv_alex}").json()
    shown = {m["id"]: m for m in page["messages"]}
    assert shown[scene.removed]["text"] is None


# --- TR1: choosing participants; order and paging -----------------------------------------------


def test_tr1_choosing_participants_shows_the_conversations_they_all_take_part_in(world: World):
    alone = start(world, "carl", client="alex", text="carl only").conversation.id
    both = start(world, "sally", members=("carl",), client="alex", text="both").conversation.id
    bill = start(world, "bill", client="alex", text="billing").conversation.id

    def shown(query: str) -> list[int]:
        r = transcript(world, "olivia", "alex", query)
        assert r.status_code == 200, r.text
        convs = [c["id"] for c in r.json()["conversations"]]
        assert {m["conversation_id"] for m in r.json()["messages"]} == set(convs)
        return convs

    carl, sally = f"member:{world.id('carl')}", f"member:{world.id('sally')}"
    assert shown("") == [alone, both, bill]
    assert shown(f"?participants={carl}") == [alone, both]
    assert shown(f"?participants={sally}") == [both]
    assert shown(f"?participants={carl},{sally}") == [both]
    assert shown(f"?participants=client:{world.id('alex')}") == [alone, both, bill]
    assert shown(f"?participants=member:{world.id('erin')}") == []  # in none of them
    assert shown(f"?participants=member:{world.id('owen')}") == []  # another practice
    r = transcript(world, "olivia", "alex", f"?participants={carl}")
    assert r.json()["chosen"] == [carl]
    # everyone to choose from, whatever is chosen
    assert len(r.json()["participants"]) == 4  # alex, bill, carl, sally
    for bad in ("carl", "member:", "member:x", "system:0", "member:-1"):
        r = transcript(world, "olivia", "alex", f"?participants={bad}")
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] == "invalid_participants"


def test_tr1_messages_come_in_order_and_page_by_cursor(world: World):
    first = start(world, "carl", client="alex", text="a1").conversation.id
    second = start(world, "priya", client="alex", text="b1").conversation.id
    for text in ("a2", "a3"):
        send(world, "carl", first, text)
    send(world, "alex", second, "b2")
    whole = transcript(world, "carl", "alex").json()
    assert [(m["conversation_id"], m["seq"], m["text"]) for m in whole["messages"]] == [
        (first, 1, "a1"),
        (first, 2, "a2"),
        (first, 3, "a3"),
        (second, 1, "b1"),
        (second, 2, "b2"),
    ]
    assert whole["next_cursor"] is None
    assert whole["messages"][-1]["sender"]["kind"] == "client"

    for limit in (1, 2, 3, 5):
        pages, cursor = [], None
        while True:
            query = f"?limit={limit}" + (f"&after={cursor}" if cursor else "")
            page = transcript(world, "carl", "alex", query).json()
            pages += page["messages"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(page["messages"]) == limit
        assert pages == whole["messages"], limit
    for bad in ("?after=x", "?after=1", "?limit=0", "?limit=1001"):
        assert transcript(world, "carl", "alex", bad).status_code == 422, bad


# --- RC1: every view and every note is audited --------------------------------------------------


def test_rc1_transcript_views_and_chart_notes_are_audited_with_ids_only(world: World):
    marker = canary()
    sent = start(world, "carl", client="alex", text=marker)
    conv, msg = sent.conversation.id, sent.message.id
    carl = world.api("carl")
    mark = last_audit_id(world)
    viewed = transcript(world, "carl", "alex", f"?participants=member:{world.id('carl')}")
    assert viewed.status_code == 200, viewed.text
    made = copy(world, "carl", "alex", [msg])
    assert made.status_code == 201, made.text
    note = made.json()["id"]
    assert carl.get(f"/api/v1/clients/{world.id('alex')}/chart-notes").status_code == 200
    assert transcript(world, "carl", "jordan").status_code == 404  # refused: not audited
    rows = audit_rows(world, mark)
    got = [
        (r["action"], r["actor_kind"], r["actor_id"], r["target_kind"], r["target_id"])
        for r in rows
    ]
    carl_id, alex_id = world.id("carl"), world.id("alex")
    assert got == [
        ("transcript.viewed", "member", carl_id, "client", alex_id),
        ("chart_note.created", "member", carl_id, "chart_note", note),
        ("chart_notes.viewed", "member", carl_id, "client", alex_id),
    ]
    assert json.loads(rows[0]["meta"]) == {
        "participants": [f"member:{carl_id}"],
        "after": None,
        "conversation_ids": [conv],
        "messages": 1,
    }
    assert json.loads(rows[1]["meta"]) == {"client_id": alex_id, "message_ids": [msg]}
    assert json.loads(rows[2]["meta"]) == {"note_ids": [note]}
    for row in rows:
        assert row["ip"] == "testclient"
        assert marker not in json.dumps(row, default=str)
        assert "Alex" not in row["meta"] and "Carl" not in row["meta"]


# --- TR2: chart notes ---------------------------------------------------------------------------


def test_tr2_a_chart_note_holds_a_copy_of_the_ticked_messages(world: World):
    texts = [canary() for _ in range(3)]
    sent = start(world, "carl", client="alex", text=texts[0])
    conv = sent.conversation.id
    reply = send(world, "alex", conv, texts[1])
    gone = send(world, "carl", conv, texts[2])
    remove(world, "carl", conv, gone["id"])
    # ticked in any order, one twice: the note holds each once, in transcript order
    r = copy(world, "sam", "alex", [gone["id"], reply["id"], sent.message.id, reply["id"]])
    assert r.status_code == 201, r.text
    note = r.json()
    assert note["client_id"] == world.id("alex")
    assert note["created_by"]["id"] == world.id("sam")
    assert note["created_by"]["name"] == "Sam Test"
    entries = note["entries"]
    assert [e["text"] for e in entries] == texts
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [(e["sender_kind"], e["sender_name"]) for e in entries] == [
        ("member", "Carl Test"),
        ("client", "Alex Client"),
        ("member", "Carl Test"),
    ]
    assert entries[1]["sender_label"] == "Client"
    assert [e["removed"] for e in entries] == [False, False, True]
    assert entries[2]["removed_by_name"] == "Carl Test"
    assert entries[2]["removed_at"] is not None
    assert entries[0]["sent_at"] == sent.message.created_at.isoformat().replace("+00:00", "Z")

    # a copy: removing a copied message afterwards does not change the note
    remove(world, "carl", conv, sent.message.id)
    listed = world.api("olivia").get(f"/api/v1/clients/{world.id('alex')}/chart-notes")
    assert listed.status_code == 200, listed.text
    [again] = listed.json()["chart_notes"]
    assert again == note
    assert again["entries"][0]["removed"] is False


def test_tr2_chart_notes_list_newest_first_and_page_back(world: World):
    sent = start(world, "carl", client="alex", text="for the record")
    ids = [copy(world, "carl", "alex", [sent.message.id]).json()["id"] for _ in range(3)]
    url = f"/api/v1/clients/{world.id('alex')}/chart-notes"
    first = world.api("bill").get(f"{url}?limit=2").json()
    assert [n["id"] for n in first["chart_notes"]] == ids[::-1][:2]
    assert first["next_before_id"] == ids[1]
    rest = world.api("bill").get(f"{url}?limit=2&before_id={ids[1]}").json()
    assert [n["id"] for n in rest["chart_notes"]] == [ids[0]]
    assert rest["next_before_id"] is None
    # each client's own notes only
    assert world.api("bill").get(f"/api/v1/clients/{world.id('jordan')}/chart-notes").json() == {
        "chart_notes": [],
        "next_before_id": None,
    }


def test_tr2_who_may_copy_into_a_chart_note(world: World):
    """The client's editors write chart notes; the biller reads the transcript but may
    not (403, about a client he sees); no access looks like a missing client (PM7)."""
    sent = start(world, "carl", client="alex", text="note me")
    msg = sent.message.id
    for who in ("olivia", "priya", "sally", "carl", "sam", "fiona", "erin"):
        assert copy(world, who, "alex", [msg]).status_code == 201, who
    r = copy(world, "bill", "alex", [msg])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_permitted")
    for who in ("betty", "gus", "dora", "alex", "pat", "owen", "zoe"):
        missing = copy(world, who, MISSING, [msg])
        r = copy(world, who, "alex", [msg])
        assert (r.status_code, r.json()) == (404, missing.json()), who
        assert "note me" not in r.text


@pytest.mark.parametrize(
    "body",
    [
        {"message_ids": []},
        {"message_ids": list(range(1, 202))},
        {"message_ids": ["1"]},
        {"message_ids": [0]},
        {},
        {"message_ids": [1], "text": "extra"},
    ],
)
def test_tr2_chart_note_input_is_checked(world: World, body: dict[str, Any]):
    r = world.api("carl").post(f"/api/v1/clients/{world.id('alex')}/chart-notes", json=body)
    assert r.status_code == 422, r.text


# --- RC2: chart notes are encrypted at rest -----------------------------------------------------


@pytest.fixture
def own_runtime(tmp_path: Path) -> Iterator[Runtime]:
    if ON_POSTGRES:
        pytest.skip("scans the SQLite file; PostgreSQL keeps its files elsewhere")
    rt = build_runtime(make_settings(tmp_path))
    yield rt
    rt.close()


def test_rc2_chart_note_text_never_appears_in_the_sqlite_file(own_runtime: Runtime):
    world = build_world(own_runtime)
    markers = [canary() for _ in range(2)]
    sent = start(world, "carl", client="alex", text=markers[0])
    gone = send(world, "carl", sent.conversation.id, markers[1])
    remove(world, "carl", sent.conversation.id, gone["id"])
    r = copy(world, "carl", "alex", [sent.message.id, gone["id"]])
    assert r.status_code == 201, r.text
    assert [e["text"] for e in r.json()["entries"]] == markers  # the control

    def files() -> bytes:
        data_dir = own_runtime.settings.data_dir
        return b"".join(p.read_bytes() for p in data_dir.glob("confide.db*") if p.is_file())

    for _ in range(2):  # in the WAL, then after a checkpoint in the main file
        raw = files()
        for m in markers:
            assert m.encode() not in raw
        with own_runtime.db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert world.emails["carl"].encode() in files()  # the scan itself works


def test_rc2_a_chart_note_body_moved_to_another_note_does_not_open(world: World):
    marker = canary()
    sent = start(world, "carl", client="alex", text=marker)
    first = copy(world, "carl", "alex", [sent.message.id]).json()["id"]
    other = start(world, "betty", client="jordan", text="jordan's")
    second = copy(world, "betty", "jordan", [other.message.id]).json()["id"]
    with world.runtime.db.engine.begin() as conn:
        body = conn.execute(select(ChartNoteRow.body).where(ChartNoteRow.id == first)).scalar_one()
        conn.execute(update(ChartNoteRow).where(ChartNoteRow.id == second).values(body=body))
    r = world.api("betty").get(f"/api/v1/clients/{world.id('jordan')}/chart-notes")
    assert r.status_code == 200, r.text
    [note] = r.json()["chart_notes"]
    assert (note["id"], note["unreadable"], note["entries"]) == (second, True, [])
    assert marker not in r.text


# --- the migration --------------------------------------------------------------------------


def test_tr2_the_chart_notes_migration_matches_the_tables_and_reverses(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'records.db'}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not [d for d in diffs if "chart_notes" in repr(d)], diffs
    migrate.downgrade(engine, "0002")
    assert "chart_notes" not in inspect(engine).get_table_names()
    migrate.upgrade(engine)
    assert "chart_notes" in inspect(engine).get_table_names()
    engine.dispose()
