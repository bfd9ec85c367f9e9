"""RC1 and issue 7 ("Audit trail"): the account owner and practice managers view and
filter the practice's audit log (who, what, when, from where) and export it as CSV.

Through the JSON API (`GET /api/v1/audit`, `GET /api/v1/audit.csv`) on the seeded
personas: who may, the practice's own chain only (PM7), every filter, keyset paging
without gaps or duplicates, a CSV that round-trips to the JSON rows with formula
injection neutralised, the views and exports audited themselves, and never any message
text in the output.
"""

import csv
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import select

from confide.domain.actors import Party
from confide.domain.entities import Role
from confide.domain.errors import Forbidden, NotFound
from confide.runtime import Runtime
from confide.services import audit_trail, team
from confide.store.repos.audit import verify_chains
from confide.store.tables import AuditRow
from confide.store.uow import unit_of_work
from tests.personas import MEMBERS_A, PASSWORD, World, build_world, start

VIEWERS = ("olivia", "priya", "pete")  # the account owner and the practice managers
STAFF_A = ("olivia", *MEMBERS_A)
NOT_VIEWERS = tuple(m for m in STAFF_A if m not in VIEWERS)
CLIENT_SIDE = ("alex", "pat")
PRACTICE_A_NAMES = (
    "Maple Street",
    "Olivia Owens",
    "Pat Parent",
    *(f"{n.title()} Test" for n in MEMBERS_A),
    *(f"{n.title()} Client" for n in ("alex", "jordan", "casey", "nora")),
)


def canary() -> str:
    return f"PHICANARY-{uuid.uuid4()}"


def view(world: World, who: str, **params: Any) -> Any:
    return world.api(who).get("/api/v1/audit", params=params)


def export(world: World, who: str, **params: Any) -> Any:
    return world.api(who).get("/api/v1/audit.csv", params=params)


def events(world: World, who: str, **params: Any) -> list[dict[str, Any]]:
    r = view(world, who, limit=500, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_before_seq"] is None, "the test expects one page"
    out: list[dict[str, Any]] = body["events"]
    return out


def csv_rows(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == audit_trail.CSV_HEADER
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def chain(world: World, practice: int) -> list[dict[str, Any]]:
    with world.runtime.db.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(AuditRow.__table__)
                .where(AuditRow.chain_id == practice)
                .order_by(AuditRow.seq)
            )
        ]


def send(world: World, who: str, conv: int, text: str) -> None:
    r = world.api(who).post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": text, "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def busy(runtime: Runtime) -> tuple[World, list[str]]:
    """A world with conversations whose texts carry canaries (never to be output)."""
    w = build_world(runtime)
    texts = [canary() for _ in range(4)]
    conv = start(w, "carl", client="alex", text=texts[0]).conversation.id
    send(w, "alex", conv, texts[1])
    team_conv = start(w, "carl", members=("erin",), text=texts[2]).conversation.id
    send(w, "erin", team_conv, texts[3])
    r = w.api("carl").get(f"/api/v1/conversations/{conv}")
    assert r.status_code == 200, r.text
    return w, texts


# --- who (RC1, issue 7; PM7) -----------------------------------------------------------------


@pytest.mark.parametrize("who", VIEWERS)
def test_rc1_owner_and_practice_managers_view_and_export_the_log(who: str, shared_world: World):
    r = view(shared_world, who)
    assert r.status_code == 200, r.text
    assert r.json()["events"], "the practice's log is never empty (practice.created …)"
    c = export(shared_world, who)
    assert c.status_code == 200, c.text
    assert csv_rows(c.text)


@pytest.mark.parametrize("who", NOT_VIEWERS)
def test_rc1_other_team_members_are_refused_403(who: str, shared_world: World):
    shared_world.api(who)  # signing in (an API token) is audited: before counting
    before = len(chain(shared_world, shared_world.practice_a))
    for r in (view(shared_world, who), export(shared_world, who)):
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "not_permitted"
        assert "Test" not in r.text  # no names in a refusal
    assert len(chain(shared_world, shared_world.practice_a)) == before  # nothing audited


@pytest.mark.parametrize("who", CLIENT_SIDE)
def test_rc1_clients_and_contacts_get_the_404_of_a_missing_route(who: str, shared_world: World):
    missing = shared_world.api(who).get(f"/api/v1/no-such-route-{uuid.uuid4().hex}")
    for r in (view(shared_world, who), export(shared_world, who)):
        assert (r.status_code, r.json()) == (404, missing.json())


def test_rc1_pm7_each_practice_sees_only_its_own_chain(busy: tuple[World, list[str]]):
    w, _texts = busy
    a_seqs = {e["seq"] for e in events(w, "olivia")}
    assert a_seqs <= {r["seq"] for r in chain(w, w.practice_a)}
    owen = view(w, "owen", limit=500)
    assert owen.status_code == 200, owen.text
    b_chain = {r["seq"]: r for r in chain(w, w.practice_b)}
    got = owen.json()["events"]
    assert got
    for e in got:
        row = b_chain[e["seq"]]  # a row of practice B's chain ...
        assert (e["action"], e["actor"]["id"]) == (row["action"], row["actor_id"])
    b_people = {w.id("owen"), w.id("bea"), w.id("zoe")}
    assert {e["actor"]["id"] for e in got if e["actor"]["kind"] != "system"} <= b_people
    csv_b = export(w, "owen")
    assert csv_b.status_code == 200
    for text in (owen.text, csv_b.text):
        leaked = [n for n in PRACTICE_A_NAMES if n in text]
        assert not leaked, leaked
    # ... and practice A's log shows nothing of practice B.
    a_text = view(w, "olivia", limit=500).text + export(w, "olivia").text
    assert "Owen Oak" not in a_text and "Bea Birch" not in a_text


# --- what each entry shows -------------------------------------------------------------------


def test_rc1_entries_show_who_what_when_and_from_where(busy: tuple[World, list[str]]):
    w, _texts = busy
    got = events(w, "priya", action="message.sent")
    by_actor = {(e["actor"]["kind"], e["actor"]["id"]): e for e in got}
    carl = by_actor[("member", w.id("carl"))]
    assert carl["actor"]["name"] == "Carl Test"
    assert carl["actor"]["label"] == "Clinician"
    assert carl["target"]["kind"] == "message" and carl["target"]["id"] >= 1
    assert set(carl["meta"]) >= {"conversation_id", "seq"}
    assert datetime.fromisoformat(carl["at"]).tzinfo is not None
    alex = by_actor[("client", w.id("alex"))]
    assert (alex["actor"]["name"], alex["actor"]["label"]) == ("Alex Client", "Client")
    assert alex["ip"] == "testclient"  # from where: the request's address
    assert alex["via"] == "magic_link"
    assert by_actor[("member", w.id("erin"))]["via"] == "api_token"


def test_rc1_no_message_text_in_the_log_or_its_export(busy: tuple[World, list[str]]):
    w, texts = busy
    body = view(w, "olivia", limit=500)
    csv_text = export(w, "olivia").text
    assert "message.sent" in body.text and "message.sent" in csv_text
    assert "conversation.opened" in body.text
    for text in texts:
        assert text not in body.text
        assert text not in csv_text
    assert "PHICANARY" not in body.text + csv_text


# --- filters ---------------------------------------------------------------------------------


def test_rc1_filter_by_actor_action_and_target(busy: tuple[World, list[str]]):
    w, _texts = busy
    carl = w.id("carl")
    mine = events(w, "olivia", actor=f"member:{carl}")
    assert mine and all((e["actor"]["kind"], e["actor"]["id"]) == ("member", carl) for e in mine)
    assert {"message.sent", "conversation.started"} <= {e["action"] for e in mine}
    clients = events(w, "olivia", actor="client")
    assert clients and {e["actor"]["kind"] for e in clients} == {"client"}

    prefix = events(w, "olivia", action="message.")
    assert prefix and all(e["action"].startswith("message.") for e in prefix)
    exact = events(w, "olivia", action="message.sent")
    assert [e["seq"] for e in exact] == [e["seq"] for e in prefix if e["action"] == "message.sent"]
    # "_" is no wildcard: a prefix matches literally.
    assert events(w, "olivia", action="message_") == []
    assert events(w, "olivia", action="messag.") == []

    conv = next(e for e in mine if e["action"] == "conversation.started")["target"]["id"]
    on_conv = events(w, "olivia", target=f"conversation:{conv}")
    assert on_conv and all(e["target"] == {"kind": "conversation", "id": conv} for e in on_conv)
    combined = events(w, "olivia", actor=f"member:{carl}", target=f"conversation:{conv}")
    assert {e["seq"] for e in combined} == {
        e["seq"] for e in on_conv if e["actor"]["id"] == carl and e["actor"]["kind"] == "member"
    }
    # The rows the filters pick are exactly the matching rows of the chain.
    db = [r for r in chain(w, w.practice_a) if r["action"].startswith("message.")]
    assert [e["seq"] for e in prefix] == [r["seq"] for r in reversed(db)]


def test_rc1_filter_by_time_range(world: World):
    """Three changes an hour apart (time-machine); `from` inclusive, `to` exclusive; any
    offset is accepted and compared in UTC."""
    owner, carl = world.actor("olivia"), world.id("carl")
    base = datetime(2031, 1, 1, 10, 0, tzinfo=UTC)
    for hour, enabled in ((0, False), (1, True), (2, False)):
        with (
            time_machine.travel(base + timedelta(hours=hour), tick=False),
            unit_of_work(world.runtime.db) as uow,
        ):
            team.set_member_messaging(uow, owner, carl, enabled=enabled)

    def at(**params: str) -> list[str]:
        got = events(world, "olivia", action="member.messaging_changed", **params)
        return [e["at"] for e in got]

    assert at(**{"from": "2031-01-01T10:30:00Z", "to": "2031-01-01T11:30:00Z"}) == [
        "2031-01-01T11:00:00Z"
    ]
    assert at(**{"from": "2031-01-01T11:00:00Z", "to": "2031-01-01T12:00:00Z"}) == [
        "2031-01-01T11:00:00Z"
    ]
    # 12:30+02:00 is 10:30 UTC.
    assert at(**{"from": "2031-01-01T12:30:00+02:00"}) == [
        "2031-01-01T12:00:00Z",
        "2031-01-01T11:00:00Z",
    ]
    assert len(at(to="2031-01-01T10:00:01Z")) == 2  # 10:00 and the seed's (2020s) change
    csv_at = [
        r["at"]
        for r in csv_rows(
            export(
                world,
                "olivia",
                action="member.messaging_changed",
                **{"from": "2031-01-01T10:30:00Z"},
            ).text
        )
    ]
    assert [datetime.fromisoformat(t) for t in csv_at] == [
        base + timedelta(hours=2),
        base + timedelta(hours=1),
    ]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"actor": "robot:1"}, "invalid_actor"),
        ({"actor": "member:0"}, "invalid_actor"),
        ({"actor": "member:x"}, "invalid_actor"),
        ({"actor": "member:12:3"}, "invalid_actor"),
        ({"target": "Conversation:5"}, "invalid_target"),
        ({"target": "conversation:-5"}, "invalid_target"),
        ({"action": "Message.sent"}, "invalid_action"),
        ({"action": "message..sent"}, "invalid_action"),
        ({"action": "message.*"}, "invalid_action"),
        ({"action": "%"}, "invalid_action"),
        ({"from": "yesterday"}, "invalid_time"),
        ({"from": "2031-01-01T10:00:00"}, "invalid_time"),  # no offset: ambiguous
        ({"to": "0001-01-01T00:00:00+14:00"}, "invalid_time"),
        ({"from": "2031-01-02T00:00:00Z", "to": "2031-01-01T00:00:00Z"}, "invalid_time_range"),
        ({"limit": "501"}, "invalid_input"),
        ({"limit": "0"}, "invalid_input"),
        ({"before_seq": "0"}, "invalid_input"),
        ({"before_seq": "abc"}, "invalid_input"),
    ],
)
def test_rc1_malformed_filters_are_422(params: dict[str, str], code: str, shared_world: World):
    for route in ("/api/v1/audit", "/api/v1/audit.csv"):
        if route.endswith(".csv") and "limit" in params:
            continue  # the export has no limit
        r = shared_world.api("olivia").get(route, params=params)
        assert r.status_code == 422, (route, r.text)
        assert r.json()["error"]["code"] == code


# --- paging ----------------------------------------------------------------------------------


def test_rc1_pages_have_no_gap_and_no_duplicate(busy: tuple[World, list[str]]):
    """Newest first by seq; `next_before_seq` continues with older rows even while the
    log grows (each page view appends `audit_log.viewed`)."""
    w, _texts = busy
    seen: list[int] = []
    before: int | None = None
    first_top = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if before is not None:
            params["before_seq"] = before
        r = view(w, "pete", **params)
        assert r.status_code == 200, r.text
        page = r.json()
        if first_top is None:
            first_top = page["events"][0]["seq"]
        seen += [e["seq"] for e in page["events"]]
        assert len(page["events"]) <= 7
        before = page["next_before_seq"]
        if before is None:
            break
        assert before == seen[-1]
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen))
    assert seen == list(range(first_top, 0, -1))  # the chain, every row once


# --- CSV -------------------------------------------------------------------------------------


def test_rc1_csv_round_trips_to_the_json_rows(busy: tuple[World, list[str]]):
    w, _texts = busy
    json_rows = events(w, "olivia", action="message.")
    r = export(w, "olivia", action="message.")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert re.fullmatch(
        r'attachment; filename="confide-audit-\d{4}-\d{2}-\d{2}\.csv"',
        r.headers["content-disposition"],
    )
    assert r.text.endswith("\r\n")
    rows = csv_rows(r.text)
    assert [int(c["seq"]) for c in rows] == [e["seq"] for e in json_rows]
    for c, e in zip(rows, json_rows, strict=True):
        assert datetime.fromisoformat(c["at"]) == datetime.fromisoformat(e["at"])
        assert (c["actor_kind"], int(c["actor_id"])) == (e["actor"]["kind"], e["actor"]["id"])
        assert (c["actor_name"], c["actor_role"]) == (e["actor"]["name"], e["actor"]["label"])
        assert (c["via"], c["action"]) == (e["via"], e["action"])
        assert c["ip"] == (e["ip"] or "")
        assert c["authenticated_entity"] == (e["authenticated_entity"] or "")
        assert (c["target_kind"], c["target_id"]) == (
            e["target"]["kind"],
            str(e["target"]["id"]) if e["target"]["id"] is not None else "",
        )
        assert json.loads(c["meta"]) == e["meta"]


def test_rc1_csv_export_streams_every_row_in_batches(world: World, monkeypatch):
    """More rows than a batch: the export holds them all, once each, newest first."""
    monkeypatch.setattr(audit_trail, "CSV_BATCH", 5)
    r = export(world, "olivia")
    seqs = [int(c["seq"]) for c in csv_rows(r.text)]
    exported = [e for e in chain(world, world.practice_a) if e["action"] == "audit_log.exported"]
    assert seqs == list(range(exported[-1]["seq"] - 1, 0, -1))  # up to the export itself
    assert len(seqs) > 10


def test_rc1_csv_neutralises_formula_injection(world: World):
    """A name a spreadsheet would run (= + - @) is exported as text: a leading
    apostrophe. JSON keeps the name as it is."""
    names = {
        "=": '=HYPERLINK("http://evil.test","x")',
        "+": "+SUM(1;2)",
        "-": "-2+3",
        "@": "@SUM(1)",
    }
    ids = {}
    for lead, name in names.items():
        with unit_of_work(world.runtime.db) as uow:
            m = team.add_member(
                uow,
                world.actor("olivia"),
                world.runtime.passwords,
                name=name,
                email=f"formula{ord(lead)}.{uuid.uuid4().hex}@maple.test",
                roles=[Role.PRACTICE_MANAGER],
                password=PASSWORD,
            )
        ids[m.id] = name
    rows = csv_rows(export(world, "olivia", action="member.added").text)
    json_rows = events(world, "olivia", action="member.added")
    by_target = {int(c["target_id"]): c for c in rows}
    assert {e["target"]["id"] for e in json_rows} == set(by_target)
    # The new members act: their names appear as the actor of their own views.
    for member_id in ids:
        w_name = f"formula-{member_id}"
        world.parties[w_name] = Party.member(member_id)
        world.practice_of[w_name] = world.practice_a
        assert view(world, w_name).status_code == 200
    csv_text = export(world, "olivia", action="audit_log.viewed").text
    exported = {int(c["actor_id"]): c["actor_name"] for c in csv_rows(csv_text)}
    for member_id, name in ids.items():
        assert exported[member_id] == f"'{name}"
    for row in csv.reader(io.StringIO(csv_text, newline="")):
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row
    got = {e["actor"]["id"]: e["actor"]["name"] for e in events(world, "olivia")}
    assert all(got[i] == n for i, n in ids.items())


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_rc1_neutralise_prefixes_formula_cells(lead: str):
    assert audit_trail.neutralise(f"{lead}1+1") == f"'{lead}1+1"
    assert audit_trail.neutralise(f"a{lead}") == f"a{lead}"


# --- viewing and exporting are audited -------------------------------------------------------


def test_rc1_viewing_and_exporting_are_audited_with_the_filters(world: World):
    carl = world.id("carl")
    world.api("priya"), world.api("olivia")  # signing in is audited: before counting
    before = len(chain(world, world.practice_a))
    r = view(world, "priya", actor=f"member:{carl}", action="message.", limit=10)
    assert r.status_code == 200
    rows = chain(world, world.practice_a)[before:]
    assert [(x["action"], x["actor_id"], x["target_kind"]) for x in rows] == [
        ("audit_log.viewed", world.id("priya"), "practice")
    ]
    meta = json.loads(rows[0]["meta"])
    assert meta["filter_actor"] == f"member:{carl}"
    assert meta["filter_action"] == "message."
    assert meta["limit"] == 10 and meta["rows"] == len(r.json()["events"])

    c = export(world, "olivia", target="conversation:5", **{"from": "2030-01-01T00:00:00Z"})
    assert c.status_code == 200
    rows = chain(world, world.practice_a)[before + 1 :]
    assert [(x["action"], x["actor_id"]) for x in rows] == [
        ("audit_log.exported", world.id("olivia"))
    ]
    meta = json.loads(rows[0]["meta"])
    assert meta["filter_target"] == "conversation:5"
    assert meta["filter_from"] == "2030-01-01T00:00:00+00:00"
    assert meta["upto_seq"] == rows[0]["seq"] - 1
    # The log stays a valid chain.
    with world.runtime.db.engine.connect() as conn:
        report = verify_chains(conn, world.runtime.db.keys)
    assert [p for p in report.problems if p.chain_id == world.practice_a] == []


def test_rc1_export_reads_in_short_transactions_and_writes_go_on_meanwhile(world: World):
    """The streamed CSV holds no transaction between batches: a write (here: a team
    change, audited) commits while the export is half read, and the export keeps its
    snapshot (rows appended meanwhile are not in it)."""
    runtime, owner = world.runtime, world.actor("olivia")
    with runtime.write() as uow:
        job = audit_trail.begin_export(uow, owner, audit_trail.AuditFilters())
    lines = audit_trail.csv_lines(job, runtime.read, batch=5)
    first = [next(lines) for _ in range(8)]  # header + a batch and a bit
    with unit_of_work(runtime.db) as uow:  # would wait forever if a writer were held
        team.set_member_messaging(uow, owner, world.id("carl"), enabled=False)
    rows = csv_rows("".join(first) + "".join(lines))
    assert [int(r["seq"]) for r in rows] == list(range(job.before_seq - 1, 0, -1))
    assert "member.messaging_changed" in {r["action"] for r in rows}  # dora's, seeded
    newest = chain(world, world.practice_a)[-1]
    assert newest["action"] == "member.messaging_changed"
    assert newest["seq"] > job.before_seq  # appended after the snapshot, not exported


def test_rc1_export_service_refuses_before_the_first_line(world: World):
    """`export_audit_csv` authorizes and audits when called, not when first read."""
    with unit_of_work(world.runtime.db) as uow, pytest.raises(Forbidden):
        audit_trail.export_audit_csv(uow, world.actor("carl"), audit_trail.AuditFilters())
    with unit_of_work(world.runtime.db) as uow, pytest.raises(NotFound):
        audit_trail.export_audit_csv(uow, world.actor("alex"), audit_trail.AuditFilters())
    with unit_of_work(world.runtime.db) as uow:
        lines = list(
            audit_trail.export_audit_csv(
                uow, world.actor("pete"), audit_trail.build_filters(action="member.")
            )
        )
    rows = csv_rows("".join(lines))
    assert rows and all(r["action"].startswith("member.") for r in rows)
    assert chain(world, world.practice_a)[-1]["action"] == "audit_log.exported"
